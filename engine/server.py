"""The engine's stdio server: read requests, answer them, run jobs one at a time on a worker.

The reader (main thread) never blocks on compute: ``load_model`` and jobs go to one worker queue,
so the engine keeps answering ``cancel``/``jobs``/``hello`` while a job runs. Torch and diffusers
are imported lazily, after the stdout guard is in place.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import stat
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from engine import __version__, protocol
from engine.jobs import Job, JobCancelled, JobContext, JobFailed
from engine.protocol import ErrorCode, ProtocolError

log = logging.getLogger("s2s.engine")

# Job kind → "module:function". Imported on first use so the server starts without torch.
JOB_HANDLERS: dict[str, str] = {
    "generate": "engine.generate:run_generate_job",
    "download_model": "engine.models.hub:run_download_job",
    "demo_subjects": "engine.toy.subjects:run_demo_subjects_job",
    "train": "engine.train.loop:run_train_job",
    "edit": "engine.edit:run_edit_job",
    "gallery": "engine.gallery:run_gallery_job",
    "evaluate": "engine.evaluate:run_evaluate_job",
    "evaluate_insertion": "engine.evaluate_insertion:run_evaluate_insertion_job",
}
# Jobs that need a loaded base model before they can be submitted.
NEEDS_MODEL = {"generate", "gallery", "edit", "attention", "invert", "train", "class_images", "evaluate_insertion"}
# Job parameters naming a folder or file the job writes into (evaluate writes beside "gallery").
WRITE_PATHS = ("out_dir", "run_dir", "class_cache_dir", "gallery", "out")


def guard_stdout() -> IO[str]:
    """Keep stdout for protocol lines only.

    Duplicates fd 1 for the protocol and points fd 1 at stderr, so anything else that writes to
    stdout (tqdm, warnings, C libraries) lands in the log instead of corrupting the protocol.
    Must run before torch/diffusers are imported.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1, newline="\n")


@dataclass
class EngineState:
    """What lives across jobs: the loaded base model (see engine.models.registry)."""

    device_preference: str = "auto"
    models: Any = None  # engine.models.registry.ModelCache, created on first load
    model_pending: bool = False
    edit_caches: Any = None  # engine.edit.EditCaches: inversions and source branches for re-renders

    def model_cache(self):
        if self.models is None:
            from engine.models.registry import ModelCache

            self.models = ModelCache()
        return self.models

    @property
    def has_model(self) -> bool:
        return self.model_pending or (self.models is not None and self.models.current is not None)


@dataclass
class _Task:
    """A unit of worker work: a job, or a deferred method call such as load_model."""

    run: Callable[[], None]
    job: Job | None = None


@dataclass
class Server:
    out: IO[str]
    state: EngineState = field(default_factory=EngineState)

    def __post_init__(self):
        self._write_lock = threading.Lock()
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._queued: list[Job] = []
        self._running: Job | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="s2s-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ output
    def send(self, message: dict) -> None:
        line = protocol.encode(message)
        with self._write_lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The GUI went away; nothing to tell. The reader sees EOF and we exit.
                self._stopping.set()

    # ------------------------------------------------------------------ input
    def serve(self, inp: IO[bytes]) -> int:
        """Serve until stdin reaches EOF or a shutdown request; returns the exit code.

        Blank lines are ignored. A line over the limit gets one parse_error and the rest of it is
        skipped unread, so its tail can never be taken for a request of its own.
        """
        limit = protocol.MAX_LINE_BYTES
        for raw in iter(lambda: inp.readline(limit + 1), b""):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            elif len(raw) > limit:
                rest = raw
                while len(rest) > limit and not rest.endswith(b"\n"):
                    rest = inp.readline(limit + 1)
            if len(raw) > limit or raw.strip():
                self.handle_line(raw)
            if self._stopping.is_set():
                break
        self.stop()
        return 0

    def handle_line(self, raw: bytes | str) -> None:
        request_id = None
        try:
            if isinstance(raw, bytes) and len(raw) > protocol.MAX_LINE_BYTES:
                raise ProtocolError(ErrorCode.PARSE_ERROR, "line exceeds the 1 MiB limit")
            obj = protocol.decode(raw)
            if protocol.usable_id(obj.get("id")):
                request_id = obj["id"]
            req = protocol.parse_request(obj)
            params = protocol.validate_method_params(req.method, req.params)
            result = getattr(self, f"_method_{req.method}")(req.id, params)
            if result is not None:
                self.send(protocol.response(req.id, result))
        except ProtocolError as exc:
            rid = exc.request_id if exc.request_id is not None else request_id
            self.send(protocol.error_response(rid, exc.code, exc.message, exc.hint))
        except Exception as exc:  # a bug must not take the engine down
            log.error("internal error handling a request:\n%s", traceback.format_exc())
            self.send(protocol.error_response(request_id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------ methods
    # Each returns a result dict, or None when the response is sent later (deferred work).
    def _method_hello(self, request_id, params) -> dict:
        return {
            "v": protocol.PROTOCOL_VERSION,
            "engine": __version__,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "job_kinds": sorted(JOB_HANDLERS),
        }

    def _method_devices(self, request_id, params) -> dict:
        from engine import devices

        found = [d.to_dict() for d in devices.list_devices()]
        return {"devices": found, "selected": devices.select_device(self.state.device_preference)}

    def _method_load_model(self, request_id, params) -> None:
        from engine.models.registry import resolve_source

        source = params["source"].strip()
        try:
            mode = os.stat(os.path.expanduser(source)).st_mode
        except FileNotFoundError:
            mode = None  # not a path: perhaps a hub id, resolve_source says
        except (OSError, ValueError) as exc:  # a name too long for the file system, a loop of links, …
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"cannot look at {source[:200]!r}: {getattr(exc, 'strerror', None) or type(exc).__name__}",
                "check the path",
            ) from None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # Reading a pipe or a device (even a header) could block this reader for good.
            raise ProtocolError(
                ErrorCode.REFUSED,
                f"{source[:200]!r} is not a file or folder (a device, pipe or socket)",
                "choose a diffusers folder or a .safetensors file",
            )
        ref = resolve_source(params)  # cheap checks (exists, pickle refusal) answer at once

        def run():
            try:
                info = self.state.model_cache().load(ref, device=params["device"])
                self.send(protocol.response(request_id, info))
            except ProtocolError as exc:
                self.send(protocol.error_response(request_id, exc.code, exc.message, exc.hint))
            except Exception as exc:
                log.error("loading %s failed:\n%s", ref.location, traceback.format_exc())
                self.send(
                    protocol.error_response(
                        request_id,
                        ErrorCode.MODEL_ERROR,
                        f"could not load {ref.location}: {type(exc).__name__}: {exc}",
                        "check that it is a Stable Diffusion 1.x model; the log has details",
                    )
                )
            finally:
                self.state.model_pending = False

        self.state.model_pending = True
        self._queue.put(_Task(run))
        return None

    def _method_submit(self, request_id, params) -> dict:
        kind = params["kind"]
        job_params = protocol.validate_job(kind, params["params"])
        if kind not in JOB_HANDLERS:
            raise ProtocolError(ErrorCode.UNSUPPORTED, f"job kind {kind!r} is not available in this engine")
        # Where a job writes must not depend on the engine's working directory ("" in an optional
        # field: the job's default). Checked before the model, so the answer does not depend on it.
        for key in WRITE_PATHS:
            value = job_params.get(key)
            if value is None or (value == "" and not protocol.JOB_SCHEMAS[kind][key].required):
                continue
            if not os.path.isabs(value):
                raise ProtocolError(ErrorCode.INVALID_PARAMS, f"{kind}.{key} must be an absolute path")
        if kind in NEEDS_MODEL and not self.state.has_model:
            raise ProtocolError(ErrorCode.NO_MODEL, "no base model is loaded", hint="call load_model first")
        job = Job(kind, job_params)
        with self._lock:
            self._jobs[job.id] = job
            self._queued.append(job)
            position = len(self._queued) + (1 if self._running else 0)
        # Answer before queueing, so the client knows the job id before its first event.
        self.send(protocol.response(request_id, {"job": job.id, "position": position}))
        self._queue.put(_Task(lambda: self._run_job(job), job))
        return None

    def _method_cancel(self, request_id, params) -> dict:
        job = self._jobs.get(params["job"])
        if job is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no job {params['job'][:40]!r}")
        with self._lock:
            was_queued = job in self._queued
            if was_queued:
                self._queued.remove(job)
                job.state = "cancelled"
            job.cancel_requested.set()
        if was_queued:
            self.send(protocol.event(job.id, "cancelled", reason="cancelled before it started"))
        # "step" lets a caller check that the cancel took effect within one step of this point.
        return {"job": job.id, "state": job.state if was_queued else "cancelling", "step": job.step}

    def _method_jobs(self, request_id, params) -> dict:
        with self._lock:
            return {"jobs": [job.summary() for job in self._jobs.values()]}

    def _method_shutdown(self, request_id, params) -> dict:
        self._stopping.set()
        return {"ok": True}

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                task.run()
            except Exception:
                log.error("worker task crashed:\n%s", traceback.format_exc())

    def _run_job(self, job: Job) -> None:
        with self._lock:
            if job.state == "cancelled":
                return
            self._queued.remove(job)
            self._running = job
            job.state = "running"
        ctx = JobContext(job, self.send)
        self.send(protocol.event(job.id, "started", kind=job.kind))
        try:
            module_name, func_name = JOB_HANDLERS[job.kind].split(":")
            handler = getattr(importlib.import_module(module_name), func_name)
            ctx.check_cancelled()
            result = handler(job.params, ctx, self.state) or {}
            job.state = "finished"
            self.send(protocol.event(job.id, "finished", result=result, elapsed_s=round(ctx.elapsed_s, 3)))
        except JobCancelled:
            job.state = "cancelled"
            self.send(protocol.event(job.id, "cancelled", step=job.step, total=job.total))
        except (JobFailed, ProtocolError) as exc:
            job.state = "failed"
            self.send(protocol.event(job.id, "failed", error={"code": exc.code, "message": exc.message, "hint": exc.hint}))
        except Exception as exc:
            job.state = "failed"
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            message, hint = describe_exception(exc)
            self.send(protocol.event(job.id, "failed", error={"code": "job_failed", "message": message, "hint": hint}))
        finally:
            with self._lock:
                self._running = None

    def stop(self) -> None:
        """Cancel everything and let the worker finish its current step."""
        self._stopping.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel_requested.set()
        self._queue.put(None)
        self._worker.join(timeout=10)


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """A user-facing message and hint for an unexpected exception (the traceback goes to the log)."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "out of memory" in lowered or isinstance(exc, MemoryError):
        return text, "the device ran out of memory: lower the batch size or resolution, or close other GPU programs"
    return text, "see the engine log for the traceback"


def run_stdio(device: str = "auto") -> int:
    protocol_out = guard_stdout()
    from engine import devices

    devices.configure_environment()
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "warning")
    logging.basicConfig(
        level=os.environ.get("S2S_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = Server(protocol_out, EngineState(device_preference=device))
    log.info("engine %s ready (pid %d)", __version__, os.getpid())
    return server.serve(sys.stdin.buffer)
