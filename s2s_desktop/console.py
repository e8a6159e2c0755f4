"""Where the bundled app's output goes when nobody is watching a terminal (Qt-free, stdlib).

A double-clicked app has no console: on Windows ``sys.stderr`` is ``None`` (or a console window
the user did not ask for), on macOS and Linux it goes to ``/dev/null``. Tracebacks and the engine's
log would be lost, so the frozen app writes them to ``<data>/logs/s2s.log`` as well (kept to two files
of at most 5 MB), beside the engine's ``engine.log`` that the log dock keeps. A run from a terminal
keeps printing there as before.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

LOG_NAME = "s2s.log"
CLI_ENGINE_LOG_NAME = "cli-engine.log"  # the engine's stderr during an `s2s` command
MAX_LOG_BYTES = 5 * 1024 * 1024

_log_file: LogFile | None = None


def logs_dir() -> Path:
    """``<data>/logs``: the same folder as the engine's log (``$S2S_HOME/logs`` when set)."""
    from s2s_desktop.settings import app_home

    return app_home() / "logs"


class LogFile:
    """Appends whole lines with a timestamp; rolls ``s2s.log`` over to ``s2s.log.1`` at start when
    it has grown past :data:`MAX_LOG_BYTES`."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
        self._lock = threading.Lock()

    def write_line(self, line: str, source: str = "app") -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            self._fh.write(f"{stamp} [{source}] {line.rstrip()}\n")

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class _Tee(io.TextIOBase):
    """A text stream that writes to the original stream (if any) and, line by line, to the log."""

    def __init__(self, original, log: LogFile, source: str):
        self._original, self._log, self._source = original, log, source
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._original is not None:
            try:
                self._original.write(text)
            except (OSError, ValueError):  # a console that went away
                self._original = None
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._log.write_line(line, self._source)
        return len(text)

    def flush(self) -> None:
        if self._original is not None:
            try:
                self._original.flush()
            except (OSError, ValueError):
                self._original = None

    def isatty(self) -> bool:
        return bool(self._original is not None and self._original.isatty())


def _has_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def _hide_unrequested_windows_console(argv: list[str]) -> None:
    """The Windows build is a console program, so ``s2s generate …`` prints in the user's terminal.
    Double-clicked, Windows opens a console window just for it: with no arguments and no other
    process on that console, let it go (the GUI needs none)."""
    if os.name != "nt" or len(argv) > 1:
        return
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    processes = (ctypes.c_uint * 4)()
    if kernel32.GetConsoleProcessList(processes, 4) <= 1:
        kernel32.FreeConsole()
        sys.stdout = sys.stderr = None  # the handles are gone with the console


def prepare(argv: list[str] | None = None) -> Path | None:
    """Call first in the frozen entry point. Returns the log file's path when output is logged."""
    global _log_file
    argv = sys.argv if argv is None else argv
    if not getattr(sys, "frozen", False):
        return None
    _hide_unrequested_windows_console(argv)
    if _has_terminal(sys.stderr):
        return None
    try:
        _log_file = LogFile(logs_dir() / LOG_NAME)
    except OSError:
        return None  # an unwritable log folder must not stop the app
    _log_file.write_line(f"start: {' '.join(argv)}", "app")
    sys.stderr = _Tee(sys.stderr, _log_file, "app")
    if sys.stdout is None:  # print() to None fails; the GUI prints paths after --screenshot
        sys.stdout = _Tee(None, _log_file, "app")
    return _log_file.path


def report_imports_at_exit() -> None:
    """With ``S2S_REPORT_IMPORTS=FILE``, write the top-level modules this process imported to FILE
    at exit: the bundle smoke test checks that the frozen GUI never loaded torch."""
    target = os.environ.get("S2S_REPORT_IMPORTS")
    if not target:
        return
    import atexit

    def write() -> None:
        names = sorted({name.split(".")[0] for name in list(sys.modules)})
        Path(target).write_text("\n".join(names) + "\n", encoding="utf-8")

    atexit.register(write)
