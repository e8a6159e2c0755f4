"""Entry of the bundled ``s2s`` executable: the GUI with no arguments, the CLI with them.

PyInstaller needs a script; the app itself lives in :mod:`s2s_desktop.cli`.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # before anything else: a frozen child must not rerun the app
    from s2s_desktop import console

    console.prepare()  # log file when there is no console; Windows: hide a console we did not ask for
    console.report_imports_at_exit()  # only when S2S_REPORT_IMPORTS names a file (bundle smoke test)
    from s2s_desktop.cli import main

    sys.exit(main())
