"""Spawns the engine, speaks the protocol, turns responses into futures and events into callbacks.

Qt-free: the CLI uses it directly (blocking on futures), the GUI wraps it in ``qt_engine.QtEngine``
which re-emits the callbacks as Qt signals. Callbacks run on the client's reader threads.

If the engine process dies, every pending request fails with ``EngineError(engine_died)``, the
job it was running is marked failed with the reason (signal, exit code, last log lines), and the
engine is restarted (with the last model reloaded) unless the client is closing.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from engine import protocol
from engine.protocol import ErrorCode

MAX_DEATHS_WITHOUT_WORK = 3


class EngineError(Exception):
    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def __str__(self) -> str:
        return f"{self.message}" + (f" — {self.hint}" if self.hint else "")


def engine_command() -> list[str]:
    """The one place that decides how to start the engine: the bundled executable next to the
    frozen GUI, else the engine package with this interpreter."""
    override = os.environ.get("S2S_ENGINE_CMD")
    if override:
        return override.split()
    if getattr(sys, "frozen", False):
        exe = Path(sys.executable).with_name("s2s-engine" + (".exe" if os.name == "nt" else ""))
        return [str(exe), "serve"]
    return [sys.executable, "-m", "engine", "serve"]


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the engine stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (often the system running out of memory)" if name == "SIGKILL" else ""
        return f"the engine was killed by {name}{why}"
    return f"the engine exited with code {returncode}"


@dataclass
class JobRecord:
    """The client's view of one job (what the jobs dock shows)."""

    id: str
    kind: str
    label: str = ""
    state: str = "queued"  # queued | running | finished | failed | cancelled
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    error: dict | None = None
    result: dict | None = None
    artifacts: list[dict] = field(default_factory=list)
    last_progress: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in protocol.TERMINAL_EVENTS


class EngineClient:
    def __init__(
        self,
        on_event: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_state: Callable[[str, str], None] | None = None,
        auto_restart: bool = True,
        command: list[str] | None = None,
        env: dict | None = None,
        hello_timeout_s: float = 60.0,
    ):
        self.on_event = on_event or (lambda event: None)
        self.on_log = on_log or (lambda line: None)
        self.on_state = on_state or (lambda state, detail: None)
        self.auto_restart = auto_restart
        self.command = command or engine_command()
        self.env = env
        self.hello_timeout_s = hello_timeout_s
        self.jobs: dict[str, JobRecord] = {}
        self.hello: dict | None = None
        self.last_model: dict | None = None  # load_model params to replay after a restart
        self.loaded_model: dict | None = None
        self.recent_log: collections.deque[str] = collections.deque(maxlen=40)
        self.restarts = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._closing = False
        # A crash loop is an engine that dies again and again before doing any work (a model that
        # kills it while loading, a broken install); an engine killed in the middle of jobs is not.
        self._deaths_without_work = 0
        self._worked = False  # this process reported job progress or lived a minute
        self._started_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> dict:
        """Spawn the engine and handshake; returns hello's result. Blocks up to hello_timeout_s."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
        self.on_state("starting", "")
        self._worked, self._started_at = False, time.monotonic()
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            creationflags=creationflags,
        )
        with self._lock:
            self._proc = proc
        threading.Thread(target=self._read_stdout, args=(proc,), name="s2s-engine-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), name="s2s-engine-err", daemon=True).start()
        self.hello = self.request("hello", {"client": "s2s_desktop"}).result(timeout=self.hello_timeout_s)
        if self.hello.get("v") != protocol.PROTOCOL_VERSION:
            raise EngineError(ErrorCode.INTERNAL, f"engine speaks protocol v{self.hello.get('v')}, expected v1")
        self.on_state("ready", f"engine {self.hello.get('engine')} pid {self.hello.get('pid')}")
        return self.hello

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the engine to shut down; closing stdin is the backstop (it exits on EOF)."""
        self._closing = True
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.request("shutdown").result(timeout=2)
            except Exception:
                pass
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.on_state("stopped", "")

    # ------------------------------------------------------------------ requests
    def request(
        self, method: str, params: dict | None = None, on_result: Callable[[dict], None] | None = None
    ) -> Future:
        """Send a request; the future resolves with its result or raises EngineError.

        ``on_result`` runs on the reader thread before the future resolves and before any later
        line is read (used to register a job before its first event)."""
        future: Future = Future()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            future.set_exception(EngineError(ErrorCode.ENGINE_DIED, "the engine is not running", "wait for it to restart"))
            return future
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = (future, on_result)
        line = protocol.encode(protocol.request(request_id, method, params or {}))
        try:
            with self._write_lock:
                proc.stdin.write(line.encode("utf-8"))
                proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            with self._lock:
                self._pending.pop(request_id, None)
            future.set_exception(EngineError(ErrorCode.ENGINE_DIED, "the engine is not running", "wait for it to restart"))
        return future

    def call(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self.request(method, params).result(timeout=timeout)

    def load_model(self, params: dict) -> Future:
        future = self.request("load_model", params)

        def remember(done: Future):
            if done.exception() is None:
                self.last_model = params
                self.loaded_model = done.result()

        future.add_done_callback(remember)
        return future

    def submit(self, kind: str, params: dict, label: str = "") -> Future:
        """Queue a job; the future resolves with ``{"job": id, "position": n}``. The JobRecord
        exists before any of the job's events arrive."""

        def register(result: dict) -> None:
            with self._lock:
                self.jobs[result["job"]] = JobRecord(result["job"], kind, label)
            self.on_event({"type": "event", "job": result["job"], "event": "queued", "kind": kind, "label": label})

        return self.request("submit", {"kind": kind, "params": params}, on_result=register)

    def cancel(self, job_id: str) -> Future:
        return self.request("cancel", {"job": job_id})

    # ------------------------------------------------------------------ reading
    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            try:
                message = protocol.decode(raw)
            except protocol.ProtocolError as exc:
                self.on_log(f"[client] unreadable line from engine: {exc.message}")
                continue
            if message.get("type") == "response":
                self._handle_response(message)
            elif message.get("type") == "event":
                self._handle_event(message)
        self._handle_exit(proc)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            # tqdm redraws with \r; keep the last state of the line only.
            line = line.rsplit("\r", 1)[-1]
            if line:
                self.recent_log.append(line)
                self.on_log(line)

    def _handle_response(self, message: dict) -> None:
        with self._lock:
            future, on_result = self._pending.pop(message.get("id"), (None, None))
        if future is None:
            if "error" in message:
                error = message["error"]
                self.on_log(f"[engine] error without request: {error.get('code')}: {error.get('message')}")
            return
        if "error" in message:
            error = message["error"] or {}
            future.set_exception(EngineError(error.get("code", "?"), error.get("message", ""), error.get("hint", "")))
            return
        result = message.get("result") or {}
        if on_result is not None:
            on_result(result)
        future.set_result(result)

    def _handle_event(self, message: dict) -> None:
        job_id = message.get("job")
        with self._lock:
            record = self.jobs.get(job_id)
            if record is None:
                record = self.jobs[job_id] = JobRecord(job_id, message.get("kind", "?"))
            name = message.get("event")
            if name == "started":
                record.state = "running"
            elif name == "progress":
                self._worked = True
                record.step, record.total = message.get("step", 0), message.get("total", 0)
                record.eta_s = message.get("eta_s")
                record.last_progress = message
            elif name == "artifact":
                record.artifacts.append(message)
            elif name in protocol.TERMINAL_EVENTS:
                record.state = name
                record.error = message.get("error")
                record.result = message.get("result")
        self.on_event(message)

    def _handle_exit(self, proc: subprocess.Popen) -> None:
        try:
            returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            returncode = None
        with self._lock:
            if proc is not self._proc:
                return
            pending, self._pending = self._pending, {}
            self.loaded_model = None  # gone with the process; a restart loads it again
            worked = self._worked or time.monotonic() - self._started_at >= 60
            self._deaths_without_work = 0 if worked else self._deaths_without_work + 1
        if self._closing:
            reason = "the engine was shut down"
        else:
            reason = describe_exit(returncode)
            tail = [line for line in self.recent_log if line.strip()][-3:]
            if tail and returncode not in (None, 0) and returncode > 0:
                reason += ": " + " | ".join(tail)
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(EngineError(ErrorCode.ENGINE_DIED, reason, "the engine restarts by itself"))
        for record in list(self.jobs.values()):
            if not record.done:
                record.state = "failed"
                record.error = {"code": ErrorCode.ENGINE_DIED, "message": reason, "hint": "run it again"}
                self.on_event(
                    {"type": "event", "job": record.id, "event": "failed", "error": record.error, "synthetic": True}
                )
        if self._closing:
            return
        self.on_state("died", reason)
        if self.auto_restart:
            self._restart(reason)

    def _restart(self, reason: str) -> None:
        if self._deaths_without_work >= MAX_DEATHS_WITHOUT_WORK:
            self.on_state("failed", f"{reason}; it died {self._deaths_without_work} times in a row before doing "
                                    "any work, so it was not restarted (the engine log says why)")
            return
        self.restarts += 1

        def run():
            try:
                self.start()
                if self.last_model is not None:
                    self.on_state("loading", self.last_model.get("name") or self.last_model["source"])
                    info = self.load_model(self.last_model).result()
                    self.on_state("model", info.get("name", ""))
            except Exception as exc:
                self.on_state("failed", f"restart failed: {exc}")

        threading.Thread(target=run, name="s2s-engine-restart", daemon=True).start()
