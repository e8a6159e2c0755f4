"""Entry of the bundled ``s2s-engine`` executable (the GUI starts it next to itself)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from engine.__main__ import main

    sys.exit(main())
