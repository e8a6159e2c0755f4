"""Generate page: prompt and settings on the left, progress, and a grid of results on the right.

A switch at the top turns it into Compare mode (:class:`ComparePanel`): the base model and a subject's
runs side by side on a prompt list and shared seeds."""

from __future__ import annotations

import random
import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from s2s_desktop import settings as app_settings
from s2s_desktop.image_meta import read_parameters
from s2s_desktop.pages.compare import ComparePanel
from s2s_desktop.widgets.image_viewer import ImageViewer

THUMB = 160
SCHEDULER_LABELS = {
    "ddim": "DDIM",
    "euler": "Euler",
    "euler_a": "Euler ancestral",
    "dpmpp_2m": "DPM++ 2M",
    "pndm": "PNDM (PLMS)",
    "unipc": "UniPC",
}


MODE_STYLE = ("QToolButton { padding: 4px 16px; border: 1px solid palette(mid); background: palette(button); }"
              "QToolButton:checked { background: palette(highlight); color: palette(highlighted-text); }")


class GeneratePage(QWidget):
    open_models = Signal()
    evaluate_requested = Signal(int)  # a gallery's id (Compare mode → the Evaluate page)
    edit_requested = Signal(dict)  # Compare's "Edit" / "Put … in" on an image (see ComparePanel)

    def __init__(self, engine, settings: app_settings.Settings, library=None, parent=None, library_problem: str = ""):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.library = library
        self.current_job: str | None = None
        self._insert_at = 0
        self._model_info: dict | None = None

        # ---- left: prompt and settings
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_button = QPushButton("Models…")
        self.model_button.clicked.connect(self.open_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.model_button)

        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("a photo of a dog on a beach, golden hour")
        self.prompt.setFixedHeight(90)
        self.negative = QPlainTextEdit(settings.generate.negative_prompt)
        self.negative.setPlaceholderText("blurry, low quality")
        self.negative.setFixedHeight(50)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(random.randint(0, 99999))
        self.seed_random = QPushButton("Random")
        self.seed_random.setToolTip("pick a new random seed")
        self.seed_random.clicked.connect(lambda: self.seed.setValue(random.randint(0, 2**31 - 1)))
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_random)
        self.steps = QSpinBox()
        self.steps.setRange(1, 500)
        self.steps.setValue(settings.generate.steps)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(settings.generate.guidance)
        self.width_box = self._size_box()
        self.height_box = self._size_box()
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        size_row.addStretch(1)
        self.batch = QSpinBox()
        self.batch.setRange(1, 16)
        self.batch.setValue(settings.generate.batch)
        self.scheduler = QComboBox()
        for key in protocol.SCHEDULERS:
            self.scheduler.addItem(SCHEDULER_LABELS.get(key, key), key)
        self.scheduler.setCurrentIndex(max(0, self.scheduler.findData(settings.generate.scheduler)))

        form = QFormLayout()
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative prompt", self.negative)
        form.addRow("Seed", seed_row)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Size (px)", size_row)
        form.addRow("Batch", self.batch)
        form.addRow("Scheduler", self.scheduler)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumHeight(34)
        self.generate_button.clicked.connect(self.on_generate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.on_cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(model_row)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left_layout.addStretch(1)
        left.setFixedWidth(400)

        # ---- right: results
        self.results = QListWidget()
        self.results.setViewMode(QListWidget.IconMode)
        self.results.setIconSize(QSize(THUMB, THUMB))
        self.results.setGridSize(QSize(THUMB + 16, THUMB + 34))
        self.results.setResizeMode(QListWidget.Adjust)
        self.results.setMovement(QListWidget.Static)
        self.results.setWordWrap(True)
        self.results.itemActivated.connect(self.show_item)
        self.results.itemClicked.connect(self.show_item)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self.open_folder)
        header = QHBoxLayout()
        self.results_title = QLabel("<b>Results</b>")
        header.addWidget(self.results_title)
        header.addStretch(1)
        header.addWidget(self.open_folder_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addLayout(header)
        right_layout.addWidget(self.results, 1)

        self.single = QWidget()
        single_layout = QHBoxLayout(self.single)
        single_layout.setContentsMargins(0, 0, 0, 0)
        single_layout.addWidget(left)
        single_layout.addWidget(right, 1)

        # ---- the mode switch: Single (the form above) | Compare (galleries of runs)
        self.compare = ComparePanel(engine, settings, library)
        self.compare.evaluate_requested.connect(self.evaluate_requested)
        self.compare.edit_requested.connect(self.edit_requested)
        self.modes = QStackedWidget()
        self.modes.addWidget(self.single)
        self.modes.addWidget(self.compare)
        self.mode_buttons = QButtonGroup(self)
        switch = QHBoxLayout()
        switch.setSpacing(0)
        for index, (text, tip) in enumerate((
            ("Single", "One prompt with the base model"),
            ("Compare", "The base model and a subject's runs side by side on the same prompts and seeds"),
        )):
            button = QToolButton()
            button.setText(text)
            button.setToolTip(tip)
            button.setCheckable(True)
            button.setStyleSheet(MODE_STYLE)
            self.mode_buttons.addButton(button, index)
            switch.addWidget(button)
        self.compare_button = self.mode_buttons.button(1)
        if library is None:
            self.compare_button.setEnabled(False)
            self.compare_button.setToolTip("Compare needs the subject library: " + (library_problem or "it is unavailable"))
        self.mode_buttons.button(0).setChecked(True)
        self.mode_buttons.idClicked.connect(self.set_mode)
        switch.addStretch(1)

        layout = QVBoxLayout(self)
        layout.addLayout(switch)
        layout.addWidget(self.modes, 1)

        self.engine.event.connect(self.on_event)
        self.engine.state_changed.connect(lambda *_: self.refresh_model_label())
        self.refresh_model_label()
        self.load_recent()

    def _size_box(self) -> QSpinBox:
        box = QSpinBox()
        box.setRange(64, 2048)
        box.setSingleStep(64)
        box.setValue(512)
        return box

    # ------------------------------------------------------------------ mode
    def set_mode(self, mode: int | str) -> None:
        """0 or "single": one prompt; 1 or "compare": a gallery of runs × prompts × seeds."""
        index = {"single": 0, "compare": 1}.get(mode, mode)
        if index == 1 and self.library is None:
            return
        self.mode_buttons.button(index).setChecked(True)
        self.modes.setCurrentIndex(index)

    def mode(self) -> str:
        return "compare" if self.modes.currentIndex() == 1 else "single"

    # ------------------------------------------------------------------ model
    def set_model_info(self, info: dict | None) -> None:
        self._model_info = info
        self.compare.set_model_info(info)
        if info:
            native = int(info.get("native_resolution") or 512)
            self.width_box.setValue(native)
            self.height_box.setValue(native)
        self.refresh_model_label()

    def refresh_model_label(self) -> None:
        info = self._model_info
        state = getattr(self.engine, "state", "")
        if info:
            text = f"Model: <b>{info['name']}</b> · {info['device']} · {info['dtype']}"
        elif state == "loading":
            text = f"Loading model <b>{self.engine.state_detail}</b>…"
        elif self.settings.active is not None:
            text = f"Model: <b>{self.settings.active.name}</b> (not loaded yet)"
        else:
            text = "No model yet: add one with <b>Models…</b> (a diffusers folder, a .safetensors file or a hub id)."
        self.model_label.setText(text)

    # ------------------------------------------------------------------ generate
    def params(self) -> dict:
        day = time.strftime("%Y-%m-%d")
        return {
            "prompt": self.prompt.toPlainText().strip(),
            "negative_prompt": self.negative.toPlainText().strip(),
            "seed": self.seed.value(),
            "steps": self.steps.value(),
            "guidance": self.guidance.value(),
            "width": self.width_box.value() // 8 * 8,
            "height": self.height_box.value() // 8 * 8,
            "batch": self.batch.value(),
            "scheduler": self.scheduler.currentData(),
            "out_dir": str(app_settings.outputs_dir() / day),
        }

    @asyncSlot()
    async def on_generate(self) -> None:
        params = self.params()
        if not params["prompt"]:
            self.show_status("Type a prompt first.", error=True)
            return
        if self._model_info is None:
            self.show_status("No model is loaded: open Models… to add or choose one.", error=True)
            return
        self._remember_defaults(params)
        self.generate_button.setEnabled(False)
        self.progress.setRange(0, params["steps"])
        self.progress.setValue(0)
        self.show_status("Queued…")
        try:
            self.current_job = await self.engine.submit("generate", params, label=params["prompt"][:60])
            self.cancel_button.setEnabled(True)
        except Exception as exc:
            self.generate_button.setEnabled(True)
            self.show_status(f"Could not start: {exc}", error=True)

    def on_cancel(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)
            self.show_status("Cancelling…")

    def on_event(self, message: dict) -> None:
        if message.get("job") != self.current_job:
            return
        name = message.get("event")
        if name == "started":
            self._insert_at = 0
            self.show_status("Generating…")
        elif name == "progress":
            total = max(int(message.get("total") or 1), 1)
            self.progress.setRange(0, total)
            self.progress.setValue(int(message.get("step", 0)))
            eta = message.get("eta_s")
            self.show_status(f"Step {message.get('step')}/{total}" + (f" · about {eta:.0f} s left" if eta else ""))
        elif name == "artifact" and message.get("kind") == "image":
            # newest batch first, its images in seed order
            self.add_result(message["path"], message.get("parameters", ""), at=self._insert_at)
            self._insert_at += 1
        elif name in protocol.TERMINAL_EVENTS:
            self.generate_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
            self.current_job = None
            if name == "finished":
                seconds = (message.get("result") or {}).get("seconds")
                self.show_status(f"Done in {seconds:.1f} s." if seconds is not None else "Done.")
            elif name == "cancelled":
                self.progress.setValue(0)
                self.show_status("Cancelled.")
            else:
                error = message.get("error") or {}
                hint = error.get("hint")
                self.show_status(f"Failed: {error.get('message')}" + (f"\n{hint}" if hint else ""), error=True)

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c0392b;" if error else "")
        self.status.setText(text)

    def _remember_defaults(self, params: dict) -> None:
        defaults = self.settings.generate
        defaults.negative_prompt = params["negative_prompt"]
        defaults.steps, defaults.guidance = params["steps"], params["guidance"]
        defaults.scheduler, defaults.batch = params["scheduler"], params["batch"]
        self.settings.save()

    # ------------------------------------------------------------------ results
    def add_result(self, path: str, parameters: str = "", at: int | None = None) -> None:
        reader = QImageReader(path)
        size = reader.size()
        if size.isValid():  # decode at thumbnail size (also enlarges small model outputs)
            reader.setScaledSize(size.scaled(THUMB, THUMB, Qt.KeepAspectRatio))
        image = reader.read()
        if image.isNull():
            return
        item = QListWidgetItem(QIcon(QPixmap.fromImage(image)), Path(path).stem)
        item.setData(Qt.UserRole, path)
        item.setData(Qt.UserRole + 1, parameters or read_parameters(path))
        item.setToolTip((parameters or "").split("\n")[0])
        if at is not None:
            self.results.insertItem(at, item)
        else:
            self.results.addItem(item)
        self.results_title.setText(f"<b>Results</b> ({self.results.count()})")

    def load_recent(self, limit: int = 60) -> None:
        """Show the newest images of earlier sessions (newest first)."""
        root = app_settings.outputs_dir()
        files = sorted(root.glob("*/*.png"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        for path in files:
            self.add_result(str(path))

    def show_item(self, item: QListWidgetItem) -> ImageViewer:
        viewer = ImageViewer(item.data(Qt.UserRole), item.data(Qt.UserRole + 1) or "", self)
        viewer.reuse_requested.connect(self.apply_parameters)
        viewer.show()
        return viewer

    def apply_parameters(self, parsed: dict) -> None:
        """Fill the form from an image's parameters (its exact settings, to vary one thing)."""
        self.prompt.setPlainText(parsed.get("prompt", ""))
        self.negative.setPlainText(parsed.get("negative_prompt", ""))
        for key, box in (("Seed", self.seed), ("Steps", self.steps)):
            if parsed.get(key, "").isdigit():
                box.setValue(int(parsed[key]))
        try:
            self.guidance.setValue(float(parsed.get("CFG scale", self.guidance.value())))
        except ValueError:
            pass
        if "x" in parsed.get("Size", ""):
            width, height = parsed["Size"].split("x", 1)
            if width.isdigit() and height.isdigit():
                self.width_box.setValue(int(width))
                self.height_box.setValue(int(height))

    def open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(app_settings.outputs_dir())))

    def shutdown(self) -> None:
        self.compare.shutdown()
