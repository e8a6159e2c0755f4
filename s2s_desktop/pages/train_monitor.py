"""The right side of the Train page: one run as it trains (phase, steps and time left, the loss
curve, the sample rows) or as it ended (its samples, its loss history, its exported files)."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.protocol.training import fill_prompt
from s2s_desktop.library.runs import Run
from s2s_desktop.pages.train_runs import (
    METHOD_SHORT,
    LiveRun,
    exports_on_disk,
    losses_on_disk,
    run_status_text,
    samples_on_disk,
)
from s2s_desktop.widgets.loss_plot import LossPlot
from s2s_desktop.widgets.sample_strip import SampleStrip
from s2s_desktop.widgets.setters import set_progress, set_text

EXPORT_NAMES = {
    "diffusers_lora": "LoRA for diffusers",
    "kohya_lora": "LoRA for A1111 / ComfyUI",
    "run_config": "Run settings",
    "model_card": "Model card",
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunMonitor(QWidget):
    sample_clicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.run: Run | None = None
        self.live: LiveRun | None = None
        self.title = QLabel()
        self.title.setTextFormat(Qt.RichText)
        self.phase = QLabel()
        self.phase.setStyleSheet("font-weight: bold;")
        self.detail = QLabel()
        self.detail.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.detail.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(10)
        phase_row = QHBoxLayout()
        phase_row.addWidget(self.phase)
        phase_row.addWidget(self.progress, 1)

        self.loss_plot = LossPlot()
        self.samples = SampleStrip()
        self.samples.sample_clicked.connect(self.sample_clicked)
        samples_box = QWidget()
        samples_layout = QVBoxLayout(samples_box)
        samples_layout.setContentsMargins(0, 4, 0, 0)
        samples_layout.addWidget(QLabel("<b>Samples</b>"))
        samples_layout.addWidget(self.samples, 1)
        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.addWidget(self.loss_plot)
        self.splitter.addWidget(samples_box)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([220, 340])  # the samples need the room: a row per sample step

        self.exports_title = QLabel("<b>Exported files</b>")
        self.exports = QListWidget()
        self.exports.itemActivated.connect(self._open_export)
        self.open_exports = QPushButton("Open exports folder")
        self.open_exports.clicked.connect(self.open_exports_folder)
        exports_row = QHBoxLayout()
        exports_row.addWidget(self.exports_title)
        exports_row.addStretch(1)
        exports_row.addWidget(self.open_exports)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(phase_row)
        layout.addWidget(self.detail)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(exports_row)
        layout.addWidget(self.exports)
        self.show_run(None, None)

    # ------------------------------------------------------------------ showing a run
    def show_run(self, run: Run | None, live: LiveRun | None, class_noun: str = "") -> None:
        """Show ``run`` from scratch: live data when this session trains it, its folder otherwise."""
        self.run, self.live = run, live
        if run is None:
            self.title.setText("<b>No run selected</b>")
            self.loss_plot.clear(placeholder="Choose a method and press Train: the loss curve appears here.")
            self.samples.clear()
            self._show_exports([])
            self.refresh()
            return
        self.title.setText(f"<b>Run #{run.id}</b> · {METHOD_SHORT.get(run.method, run.method)} · "
                           f"{run.created_at[:16]} · {html.escape(run.model)}")
        total = live.total if live else run.total_steps
        losses = live.losses if live else losses_on_disk(run)
        self.loss_plot.clear(total, placeholder="The loss curve appears when training starts."
                             if live or run.status != "finished" else "No loss history kept for this run.")
        self.loss_plot.set_points(losses)
        self.samples.clear()
        prompts = [fill_prompt(p, run.token, class_noun) for p in run.config.get("sample_prompts", [])]
        self.samples.set_prompts(prompts)
        for sample in live.samples if live else samples_on_disk(run):
            self.add_sample(sample)
        self._show_exports(live.exports if live and live.exports else exports_on_disk(run))
        self.refresh()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss_plot.add_point(step, loss)

    def add_sample(self, sample: dict) -> None:
        self.samples.add_sample(sample["step"], sample.get("prompt_index") or 0, sample.get("seed") or 0,
                                sample["path"], sample.get("prompt") or "")

    def refresh(self, run: Run | None = None) -> None:
        """The phase line, the progress bar and the details, from the live state or the run row."""
        if run is not None:
            self.run = run
        run, live = self.run, self.live
        if run is None:
            set_text(self.phase, "")
            set_text(self.detail, "Pick a subject on the left; its runs are listed there.")
            set_progress(self.progress, 0, 1)
            return
        if live is not None and live.active:
            self._show_live(live)
        else:
            self._show_ended(run, live)
        if live is not None and not live.active and live.exports:
            self._show_exports(live.exports)

    def _show_live(self, live: LiveRun) -> None:
        eta = f" · about {duration(live.eta_s)} left" if live.eta_s else ""
        if live.state == "class_images":
            set_text(self.phase, f"Making class images {live.phase_step}/{live.phase_total}…")
            set_progress(self.progress, live.phase_step, live.phase_total)
            set_text(self.detail, "Prior preservation: what the model draws for the class before training, "
                                  f"kept for later runs{eta}")
            return
        stopping = {"pause": "Pausing (saving a checkpoint)…", "cancel": "Cancelling…"}.get(live.stop)
        phase = stopping or {
            "preparing": "Preparing the photos…",
            "queued": "Queued: waits for the engine's earlier jobs",
            "starting": "Starting: loading the photos, drawing the step-0 samples…",
            "train": "Training",
            "finishing": "Drawing the final samples and exporting…",
        }.get(live.state, live.state)
        set_text(self.phase, phase)
        set_progress(self.progress, live.step, live.total)
        loss = f" · loss {self.loss_plot.smoothed()[-1]:.4f} (smoothed)" if self.loss_plot.losses else ""
        set_text(self.detail, f"Step {live.step}/{live.total}{eta if live.state == 'train' else ''}{loss}")

    def _show_ended(self, run: Run, live: LiveRun | None) -> None:
        status = run_status_text(run, live)
        set_text(self.phase, status[:1].upper() + status[1:])
        set_progress(self.progress, run.step, run.total_steps)
        parts = [f"Step {run.step}/{run.total_steps}"]
        if run.status == "finished":
            result = run.result or {}
            if result.get("seconds") is not None:
                parts.append(f"took {duration(result['seconds'])}")
            if result.get("final_loss") is not None:
                parts.append(f"final loss {result['final_loss']:.4f} (mean of the last 20 steps)")
        elif run.error:
            parts.append(run.error)
        set_text(self.detail, " · ".join(parts))

    # ------------------------------------------------------------------ exports
    def _show_exports(self, exports: list[dict]) -> None:
        self.exports.clear()
        for item in exports:
            path = Path(item["path"])
            kind = EXPORT_NAMES.get(item.get("format", ""), item.get("format", ""))
            row = QListWidgetItem(f"{path.name}  —  {kind}" if kind else path.name)
            row.setData(Qt.UserRole, str(path))
            row.setToolTip(str(path))
            self.exports.addItem(row)
        if exports:  # as tall as its rows (up to four), so the samples keep the rest
            rows = min(len(exports), 4) * max(self.exports.sizeHintForRow(0), 16)
            self.exports.setFixedHeight(rows + 2 * self.exports.frameWidth() + 4)
        for widget in (self.exports_title, self.exports, self.open_exports):
            widget.setVisible(bool(exports))

    def export_paths(self) -> list[str]:
        return [self.exports.item(i).data(Qt.UserRole) for i in range(self.exports.count())]

    def _open_export(self, item: QListWidgetItem) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(item.data(Qt.UserRole)).parent)))

    def open_exports_folder(self) -> None:
        if self.run is not None:
            folder = self.run.exports_dir if self.run.exports_dir.is_dir() else self.run.folder
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
