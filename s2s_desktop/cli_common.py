"""What every ``s2s`` subcommand shares: exit codes, usage errors, an engine session with a progress bar."""

from __future__ import annotations

import sys
import threading

from engine import protocol

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Engine error codes that mean the user's input was wrong (exit 2) rather than a failure (exit 1).
INPUT_ERRORS = {
    protocol.ErrorCode.INVALID_PARAMS,
    protocol.ErrorCode.REFUSED,
    protocol.ErrorCode.NOT_FOUND,
    protocol.ErrorCode.MODEL_ERROR,
    protocol.ErrorCode.NO_MODEL,
    "prompt_too_long",
}
PAGES = ("library", "train", "generate", "edit", "evaluate")


class UsageError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# engine session helpers


class ProgressPrinter:
    """A one-line progress bar on stderr (a line per quarter when stderr is not a terminal)."""

    def __init__(self, label: str):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last_quarter = -1

    def update(self, step: int, total: int, eta: float | None, unit: str = "") -> None:
        if total <= 0:
            return
        if unit == "bytes":
            shown = f"{step / 2**20:.0f}/{total / 2**20:.0f} MB"
        else:
            shown = f"{step}/{total}"
        eta_text = f" ETA {eta:.0f}s" if eta else ""
        if self.tty:
            filled = int(30 * step / total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {shown}{eta_text}   ")
            sys.stderr.flush()
        else:
            quarter = int(4 * step / total)
            if quarter != self.last_quarter:
                self.last_quarter = quarter
                print(f"{self.label}: {shown}{eta_text}", file=sys.stderr)

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


class Session:
    """One engine for the duration of a command, with helpers to run a job to its end."""

    def __init__(self):
        from s2s_desktop.engine_client import EngineClient

        self._done: dict[str, threading.Event] = {}
        self._printers: dict[str, ProgressPrinter] = {}
        self._engine_log = _open_engine_log()
        self.client = EngineClient(on_event=self._on_event, on_log=self._on_log, auto_restart=False)

    def __enter__(self) -> Session:
        self.client.start()
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self._engine_log is not None:
            self._engine_log.close()

    def _on_log(self, line: str) -> None:
        # Engine messages say "see the engine log": without a GUI log dock, this file is that log.
        if self._engine_log is not None:
            try:
                self._engine_log.write_line(line, "engine")
            except (OSError, ValueError):
                self._engine_log = None

    def _on_event(self, message: dict) -> None:
        job = message.get("job", "")
        printer = self._printers.get(job)
        if message.get("event") == "progress" and printer:
            printer.update(message.get("step", 0), message.get("total", 0), message.get("eta_s"), message.get("unit", ""))
        if message.get("event") in protocol.TERMINAL_EVENTS:
            if printer:
                printer.done()
            self._done.setdefault(job, threading.Event()).set()

    def run_job(self, kind: str, params: dict, label: str):
        """Submit and wait; Ctrl-C cancels the job in the engine before exiting."""
        job_id = self.client.submit(kind, params, label).result()["job"]
        self._printers[job_id] = ProgressPrinter(label)
        event = self._done.setdefault(job_id, threading.Event())
        try:
            while not event.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.client.cancel(job_id)
            event.wait(30)
            raise
        return self.client.jobs[job_id]

    def load(self, params: dict) -> dict:
        from s2s_desktop.engine_client import EngineError

        try:
            return self.client.load_model(params).result()
        except EngineError as exc:
            if exc.code in INPUT_ERRORS:
                raise UsageError(error_text({"message": exc.message, "hint": exc.hint})) from None
            raise


def engine_log_path():
    from s2s_desktop.console import CLI_ENGINE_LOG_NAME, logs_dir

    return logs_dir() / CLI_ENGINE_LOG_NAME


def _open_engine_log():
    from s2s_desktop.console import LogFile

    try:
        return LogFile(engine_log_path())
    except OSError:  # an unwritable data folder must not stop a command
        return None


def error_text(error: dict | None) -> str:
    error = error or {}
    hint = error.get("hint") or ""
    if "log" in hint:  # "the log has details", "see the engine log …": say where it is
        hint += f" ({engine_log_path()})"
    return error.get("message", "failed") + (f" — {hint}" if hint else "")


# ---------------------------------------------------------------------------------------------
