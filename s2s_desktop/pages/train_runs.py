"""The Train page's bookkeeping, without widgets: which engine job trains which library run, what
each live run has reported (phase, steps, losses, samples, exports), and the library kept in step.

All of it runs on the GUI thread (events arrive as Qt signals there), which is also where the
library's sqlite rows are written; only preparing the training images runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine import protocol
from engine.protocol import training
from s2s_desktop.library import Library, LibraryError, Subject
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.runs import Run

SAMPLE_NAME = re.compile(r"^step-(\d+)-p(\d+)-s(\d+)\.png$")  # how engine/train/loop.py names samples
MAX_UNCLAIMED_EVENTS = 5000
METHOD_SHORT = {"dreambooth": "DreamBooth", "lora": "LoRA", "ti": "Textual Inversion", "pivotal": "Pivotal"}


@dataclass
class LiveRun:
    """A run this window submitted: what its job has reported so far."""

    run_id: int
    subject_id: int
    total: int
    job: str | None = None
    state: str = "preparing"  # preparing | queued | starting | class_images | train | finishing | <terminal>
    step: int = 0  # the last training step reported
    phase_step: int = 0
    phase_total: int = 0
    eta_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # path, step, prompt, seed, prompt_index
    exports: list[dict] = field(default_factory=list)  # path, format
    stop: str = ""  # "pause" | "cancel": what the user asked for, so "cancelled" can be told apart
    error: str = ""

    @property
    def active(self) -> bool:
        return self.state not in protocol.TERMINAL_EVENTS


def error_text(error: dict | None) -> str:
    error = error or {}
    message = error.get("message") or "unknown error"
    return message + (f" — {error['hint']}" if error.get("hint") else "")


# ---------------------------------------------------------------------------------------------
# A run's folder, read back (runs of earlier sessions, and resumed ones)


def samples_on_disk(run: Run) -> list[dict]:
    out = []
    folder = run.samples_dir
    if folder.is_dir():
        for path in sorted(folder.glob("step-*.png")):
            match = SAMPLE_NAME.match(path.name)
            if match:
                step, prompt_index, seed = map(int, match.groups())
                out.append({"path": str(path), "step": step, "prompt_index": prompt_index, "seed": seed})
    return out


def losses_on_disk(run: Run) -> list[tuple[int, float]]:
    """The loss history the latest complete checkpoint carries (its state.json; no torch needed)."""
    folder = run.folder / "checkpoints"
    states = sorted(folder.glob("step-*/state.json")) if folder.is_dir() else []
    if not states:
        return []
    try:
        history = json.loads(states[-1].read_text(encoding="utf-8"))
        return [(int(step), float(loss)) for step, loss in history.get("loss", [])]
    except (OSError, ValueError, TypeError):
        return []


def exports_on_disk(run: Run) -> list[dict]:
    if run.result.get("exports"):
        return list(run.result["exports"])
    folder = run.exports_dir
    return [{"path": str(p), "format": p.suffix.lstrip(".")} for p in sorted(folder.iterdir())] if folder.is_dir() else []


def run_status_text(run: Run, live: LiveRun | None) -> str:
    """How the runs list describes a run ("paused" is a cancelled run that kept its checkpoint)."""
    if live is not None and live.active:
        return {
            "preparing": "preparing photos",
            "queued": "queued",
            "starting": "starting",
            "class_images": f"class images {live.phase_step}/{live.phase_total}",
            "train": "training",
            "finishing": "final samples and exports",
        }.get(live.state, live.state)
    if run.status == "cancelled":
        return "paused — progress kept" if run.resumable else "cancelled"
    if run.status in ("running", "queued"):
        return "interrupted" + (" — progress kept" if run.resumable else "")
    return run.status


# ---------------------------------------------------------------------------------------------


class TrainJobs(QObject):
    """Submits runs and preflights, follows their events, writes the library rows."""

    changed = Signal(int)  # run id: state, step or phase changed
    loss_added = Signal(int, int, float)  # run id, step, loss
    sample_added = Signal(int, dict)  # run id, sample
    finished = Signal(int)  # run id: it ended (finished, failed or cancelled)

    def __init__(self, engine, library: Library, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.library = library
        self.live: dict[int, LiveRun] = {}  # run id → its live state (this session's runs)
        self._by_job: dict[str, LiveRun] = {}
        self._waiters: dict[str, asyncio.Future] = {}  # preflight job → its end
        self._unclaimed: dict[str, list[dict]] = {}  # events that came before their job id did
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-train-prep")
        self._closing = False
        engine.event.connect(self.on_event)

    def in_worker(self, work, *args) -> asyncio.Future:
        return asyncio.wrap_future(self._pool.submit(work, *args))

    # ------------------------------------------------------------------ starting
    async def launch(self, run: Run, subject: Subject, resolution: int, resume: bool) -> LiveRun:
        """Prepare the photos off the GUI thread and queue the run's job."""
        live = LiveRun(run.id, run.subject_id, int(run.config.get("steps") or run.total_steps))
        if resume:  # the curve and samples go on from where the run stopped
            live.losses = losses_on_disk(run)
            live.samples = samples_on_disk(run)
            live.step = live.losses[-1][0] if live.losses else run.step
        self.live[run.id] = live
        if resume:
            library_runs.update_run(self.library, run.id, status="queued", error="")
        self.changed.emit(run.id)
        try:
            images = await self.in_worker(library_runs.prepare_training_images, self.library, run.subject_id, run.folder,
                                          resolution)
            params = library_runs.train_params(self.library, subject, run.method, run.config, run.folder, images,
                                               resume=resume)
            job = await self.engine.submit("train", params, label=f"{METHOD_SHORT[run.method]} {subject.name}")
        except Exception as exc:
            self._end(live, "failed", error=str(exc))
            return live
        live.job = job
        if live.state == "preparing":
            live.state = "queued"
        self._by_job[job] = live
        for message in self._unclaimed.pop(job, []):
            self.on_event(message)
        self.changed.emit(run.id)
        if live.stop and live.active:  # paused or cancelled while its photos were being prepared
            self.engine.cancel(job)
        return live

    async def export_launch(self, run: Run, subject: Subject, resolution: int, model_params: dict) -> Path:
        """Write the run as ``launch/run.json`` for ``accelerate launch -m engine.train.headless``; the
        run stays in the library (resumable here once the headless run has written checkpoints)."""
        images = await self.in_worker(library_runs.prepare_training_images, self.library, run.subject_id,
                                      run.folder, resolution)
        params = library_runs.train_params(self.library, subject, run.method, run.config, run.folder, images)
        path = training.write_launch(run.folder / "launch", model_params, params)
        library_runs.update_run(self.library, run.id, status="cancelled", error=f"exported to {path}")
        self.changed.emit(run.id)
        return path

    async def preflight(self, subject: Subject, method: str, config: dict, resolution: int) -> dict:
        """Two timed steps and a sample on this subject's photos; the engine's result, or raises."""
        folder = library_runs.preflight_folder(self.library, subject.id)
        images = await self.in_worker(library_runs.prepare_training_images, self.library, subject.id, folder,
                                      resolution)
        params = library_runs.train_params(self.library, subject, method, config, folder, images, preflight=True)
        job = await self.engine.submit("train", params, label="preflight")
        waiter = self._waiters[job] = asyncio.get_running_loop().create_future()
        for message in self._unclaimed.pop(job, []):
            self.on_event(message)
        try:
            message = await waiter
        finally:
            self._waiters.pop(job, None)
        if message.get("event") != "finished":
            raise RuntimeError(error_text(message.get("error")) if message.get("error") else message["event"])
        return message.get("result") or {}

    # ------------------------------------------------------------------ stopping
    def stop(self, run_id: int, how: str) -> None:
        """``pause`` keeps the checkpoint to resume from; ``cancel`` deletes it when the job ends."""
        live = self.live.get(run_id)
        if live is None or not live.active:
            return
        live.stop = how
        if live.job is not None:
            self.engine.cancel(live.job)
        self.changed.emit(run_id)

    # ------------------------------------------------------------------ events
    def on_event(self, message: dict) -> None:
        job, name = message.get("job"), message.get("event")
        waiter = self._waiters.get(job)
        if waiter is not None:
            if name in protocol.TERMINAL_EVENTS and not waiter.done():
                waiter.set_result(message)
            return
        live = self._by_job.get(job)
        if live is None:
            # A train job whose id has not reached launch()/preflight() yet (the reader thread can
            # deliver its first events before the submit response resumes the coroutine): keep them.
            record = self.engine.jobs.get(job)
            if record is not None and record.kind == "train" and not self._closing:
                buffer = self._unclaimed.setdefault(job, [])
                if len(buffer) < MAX_UNCLAIMED_EVENTS:
                    buffer.append(message)
            return
        if not live.active:
            return
        if name == "started":
            live.state = "starting"
            self._write(live.run_id, status="running")
        elif name == "progress":
            self._on_progress(live, message)
        elif name == "artifact":
            self._on_artifact(live, message)
        elif name == "finished":
            result = message.get("result") or {}
            live.exports = list(result.get("exports") or [])
            live.step = int(result.get("step", live.step))
            self._end(live, "finished", result=result)
            return
        elif name == "failed":
            self._end(live, "failed", error=error_text(message.get("error")))
            return
        elif name == "cancelled":
            self._end(live, "cancelled")
            return
        else:
            return
        self.changed.emit(live.run_id)

    def _on_progress(self, live: LiveRun, message: dict) -> None:
        step, total = int(message.get("step", 0)), int(message.get("total") or 0)
        live.phase_step, live.phase_total, live.eta_s = step, total, message.get("eta_s")
        if message.get("phase") == "class_images":
            live.state = "class_images"
            return
        live.state = "finishing" if step >= total > 0 else "train"
        live.step, live.total = step, total or live.total
        # "losses": every step since the previous event (events are throttled); "loss": this step
        points = message.get("losses") or ([[step, message["loss"]]] if "loss" in message else [])
        for point_step, value in points:
            point_step, loss = int(point_step), float(value)
            live.losses = [p for p in live.losses if p[0] < point_step] + [(point_step, loss)]
            self.loss_added.emit(live.run_id, point_step, loss)

    def _on_artifact(self, live: LiveRun, message: dict) -> None:
        kind = message.get("kind")
        if kind == "sample":
            sample = {k: message.get(k) for k in ("path", "step", "prompt", "seed", "prompt_index")}
            live.samples = [s for s in live.samples if (s["step"], s["prompt_index"], s["seed"])
                            != (sample["step"], sample["prompt_index"], sample["seed"])] + [sample]
            self.sample_added.emit(live.run_id, sample)
        elif kind == "checkpoint":
            # the library's step is what the run can resume from
            self._write(live.run_id, step=int(message.get("step", 0)))
        elif kind == "export":
            live.exports.append({"path": message.get("path"), "format": message.get("format", "")})

    def _end(self, live: LiveRun, state: str, result: dict | None = None, error: str = "") -> None:
        live.state, live.error = state, error
        if live.job is not None:
            self._by_job.pop(live.job, None)
        fields: dict = {"status": state, "step": live.step}
        if state == "finished":
            fields["result"] = result or {}
        elif state == "failed":
            fields["error"] = error
        elif live.stop == "cancel":
            try:
                run = library_runs.get_run(self.library, live.run_id)
                shutil.rmtree(run.folder / "checkpoints", ignore_errors=True)
            except LibraryError:
                pass
            fields["error"] = "cancelled; its checkpoints were deleted"
        elif live.step > 0:  # paused here, cancelled in the jobs dock, or the app closing: all checkpoint
            fields["error"] = f"paused at step {live.step}; resume to go on from there"
        else:
            fields["error"] = "stopped before training began"
        self._write(live.run_id, **fields)
        self.changed.emit(live.run_id)
        self.finished.emit(live.run_id)

    def _write(self, run_id: int, **fields) -> None:
        try:
            library_runs.update_run(self.library, run_id, **fields)
        except LibraryError:
            pass  # its subject was deleted while it trained; the job's end still reaches the page

    def active_runs(self) -> list[LiveRun]:
        return [live for live in self.live.values() if live.active]

    def shutdown(self) -> None:
        """The window is closing: the engine checkpoints running jobs as it shuts down, so they are
        recorded as paused; runs still waiting are recorded as never started."""
        self._closing = True
        for live in self.active_runs():
            self._end(live, "cancelled")
        self._pool.shutdown(wait=False, cancel_futures=True)
