"""``s2s-engine serve`` / ``python -m engine serve``: the engine process the GUI talks to."""

from __future__ import annotations

import argparse
import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    parser = argparse.ArgumentParser(prog="s2s-engine", description="Subject2Subject compute engine (internal).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the JSON Lines protocol on stdin/stdout")
    serve.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    args = parser.parse_args(argv)
    if args.version:
        from engine import __version__

        print(__version__)
        return 0
    if args.command != "serve":
        parser.print_usage(sys.stderr)
        return 2
    # Imported here: the stdout guard inside must run before anything imports torch.
    from engine.server import run_stdio

    return run_stdio(device=args.device)


if __name__ == "__main__":
    sys.exit(main())
