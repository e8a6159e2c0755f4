"""Jobs as the worker sees them: state, cooperative cancel, throttled progress.

Handlers receive a ``JobContext`` and call ``ctx.progress(...)`` once per denoising/training step;
``progress`` also checks the cancel flag, so a cancel takes effect within one step.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import protocol


class JobCancelled(Exception):
    """Raised inside a handler when the user cancelled; unwinds to the worker."""


class JobFailed(Exception):
    """A failure the user can act on: becomes a ``failed`` event with code, message and hint."""

    def __init__(self, message: str, hint: str = "", code: str = "job_failed"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


_job_numbers = itertools.count(1)
# Job ids stay unique across engine restarts, so a client never confuses a new job with an old one.
_PROCESS_TAG = secrets.token_hex(2)


@dataclass
class Job:
    kind: str
    params: dict
    id: str = field(default_factory=lambda: f"{_PROCESS_TAG}-{next(_job_numbers)}")
    state: str = "queued"  # queued | running | finished | failed | cancelled
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    step: int = 0
    total: int = 0
    submitted_at: float = field(default_factory=time.time)

    def summary(self) -> dict:
        return {"job": self.id, "kind": self.kind, "state": self.state, "step": self.step, "total": self.total}


class JobContext:
    """What a job handler may do: report progress/artifacts/logs and notice cancellation."""

    def __init__(
        self,
        job: Job,
        emit: Callable[[dict], None],
        max_rate: float = protocol.MAX_PROGRESS_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.job = job
        self._emit = emit
        self._min_interval = 1.0 / max_rate
        self._clock = clock
        self._started = clock()
        self._last_sent = float("-inf")
        self._rate_origin: tuple[float, int] | None = None
        self.progress_sent = 0

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        if self.job.cancel_requested.is_set():
            raise JobCancelled()

    def progress(self, step: int, total: int, *, force: bool = False, **extra: Any) -> bool:
        """Report progress (throttled to ``max_rate`` events/s; the final step always goes out),
        then raise JobCancelled if a cancel arrived. Returns whether this one was sent."""
        job = self.job
        now = self._clock()
        if self._rate_origin is None or step < self._rate_origin[1]:
            self._rate_origin = (now, step)
        job.step, job.total = step, total
        final = total > 0 and step >= total
        sent = force or final or now - self._last_sent >= self._min_interval
        if sent:
            self._last_sent = now
            self.progress_sent += 1
            self._emit(protocol.event(job.id, "progress", step=step, total=total, eta_s=self._eta(now, step, total), **extra))
        self.check_cancelled()
        return sent

    def _eta(self, now: float, step: int, total: int) -> float | None:
        origin_time, origin_step = self._rate_origin or (now, step)
        done = step - origin_step
        if done <= 0 or total <= 0:
            return None
        return round((now - origin_time) / done * max(total - step, 0), 2)

    def artifact(self, path: str, kind: str, **meta: Any) -> None:
        self._emit(protocol.event(self.job.id, "artifact", path=str(path), kind=kind, **meta))

    def log(self, message: str, level: str = "info") -> None:
        self._emit(protocol.event(self.job.id, "log", level=level, message=message))

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started
