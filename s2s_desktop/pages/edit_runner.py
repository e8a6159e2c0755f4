"""Runs the Edit page's jobs: one at a time, the newest wins.

Dragging a slider asks for a re-render many times a second. Requests are debounced (the last one
in a quiet spell of ``delay_ms`` is submitted), and a render still in flight when a newer one is
submitted is cancelled: its result would be stale. Only the newest job's events reach the page.
"""

from __future__ import annotations

import json
import time

from PySide6.QtCore import QObject, QTimer, Signal
from qasync import asyncSlot

from engine import protocol

DEBOUNCE_MS = 250
PHASES = {"inverting": "Inverting", "editing": "Editing"}


class EditRunner(QObject):
    submitted = Signal(str)  # job id
    progress = Signal(str, int, int)  # phase title, step, total
    finished = Signal(dict, dict, bool)  # params, result, live (a slider re-render)
    failed = Signal(str, str)  # message, hint
    cancelled = Signal()
    busy_changed = Signal(bool)

    def __init__(self, engine, delay_ms: int = DEBOUNCE_MS, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.job: str | None = None  # the newest submitted job, until it ends
        self.job_params: dict | None = None
        self.job_live = False
        self.pending: dict | None = None  # waiting out the debounce
        self.pending_live = False
        self.stale: set[str] = set()  # jobs cancelled because a newer one replaced them
        self.submissions = 0
        self._generation = 0  # bumps on every submission, so a slow submit can tell it was overtaken
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self._submit_pending)
        engine.event.connect(self.on_event)

    @property
    def busy(self) -> bool:
        return self.job is not None or self.pending is not None

    # ------------------------------------------------------------------ requests
    def run_now(self, params: dict) -> None:
        """An explicit Edit: submitted at once (replacing whatever is in flight)."""
        self.timer.stop()
        self.pending, self.pending_live = params, False
        self._submit_pending()

    def run_later(self, params: dict) -> None:
        """A slider re-render: submitted once the slider has been still for the debounce delay."""
        if self.pending is None and not self.job and params == self.job_params:
            return
        self.pending, self.pending_live = params, True
        self.timer.start()
        self.busy_changed.emit(True)

    def cancel(self) -> bool:
        """Drop a waiting re-render and cancel the job in flight; False when there was no job (its
        "cancelled" event follows otherwise)."""
        self.timer.stop()
        self.pending = None
        if self.job:
            self.engine.cancel(self.job)
            return True
        self.busy_changed.emit(False)
        return False

    def stop(self) -> None:
        """The page goes away: nothing more is submitted; the job in flight is cancelled."""
        self.timer.stop()
        self.pending = None
        if self.job:
            self.stale.add(self.job)
            self.engine.cancel(self.job)
            self.job = None
        self.busy_changed.emit(False)

    def unique_name(self) -> str:
        """File stem of a render: re-renders come several a second, and each keeps its own files."""
        stamp = time.time()
        return time.strftime("edit-%Y%m%d-%H%M%S", time.localtime(stamp)) + f"-{int(stamp * 1000) % 1000:03d}" \
            f"-{self.submissions}"

    @asyncSlot()
    async def _submit_pending(self) -> None:
        params, live = self.pending, self.pending_live
        self.pending = None
        if params is None:
            return
        if self.job:  # the render in flight is stale now
            self.stale.add(self.job)
            self.engine.cancel(self.job)
            self.job = None
        self._generation += 1
        generation = self._generation
        self.submissions += 1
        self.busy_changed.emit(True)
        label = f"edit: {params.get('target_prompt') or params.get('source_prompt', '')}"[:60]
        try:
            job = await self.engine.submit("edit", {"name": self.unique_name(), **params}, label=label)
        except Exception as exc:
            if generation == self._generation:
                self.failed.emit(getattr(exc, "message", None) or str(exc), getattr(exc, "hint", "") or "")
                self.busy_changed.emit(self.busy)
            return
        if generation != self._generation:  # a newer request went out while this one was submitted
            self.stale.add(job)
            self.engine.cancel(job)
            return
        self.job, self.job_params, self.job_live = job, params, live
        self.submitted.emit(job)
        # Its events may have been delivered before the submit's answer: the record has the outcome.
        record = getattr(self.engine, "jobs", {}).get(job)
        if record is not None and record.done:
            self._end(record.state, {"result": record.result, "error": record.error})

    # ------------------------------------------------------------------ events
    def on_event(self, message: dict) -> None:
        job = message.get("job")
        if job is None or job != self.job:
            return
        name = message.get("event")
        if name == "progress":
            phase = PHASES.get(str(message.get("phase") or "editing"), "Editing")
            self.progress.emit(phase, int(message.get("step") or 0), int(message.get("total") or 0))
        elif name == "started":
            self.progress.emit("Starting", 0, 0)
        elif name in protocol.TERMINAL_EVENTS:
            self._end(name, message)

    def _end(self, name: str, message: dict) -> None:
        params, live = self.job_params or {}, self.job_live
        self.job = None
        self.job_params = None if name != "finished" else params
        if name == "finished":
            self.finished.emit(params, dict(message.get("result") or {}), live)
        elif name == "cancelled":
            self.cancelled.emit()
        else:
            error = message.get("error") or {}
            self.failed.emit(str(error.get("message") or "the edit failed"), str(error.get("hint") or ""))
        self.busy_changed.emit(self.busy)


def same_source(a: dict | None, b: dict | None) -> bool:
    """Whether two edits start from the same picture (so the engine's cached source branch serves)."""
    if not a or not b:
        return False
    keys = ("source_prompt", "negative_prompt", "image", "seed", "invert", "steps", "guidance", "adapter")
    return json.dumps([a.get(k) for k in keys]) == json.dumps([b.get(k) for k in keys])
