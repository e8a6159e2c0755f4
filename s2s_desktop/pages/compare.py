"""The Generate page's Compare mode: the base model and a subject's runs side by side on the same
prompts and seeds (one ``gallery`` job), filling a grid as the images arrive.

Left: which subject and columns (the base model, finished runs with their LoRA scale, every
checkpoint of one run), the prompt list (editable, saved under the app home), the seeds and the
sampling settings. Right: the grid, earlier galleries, and the way on to exporting and evaluating.
Every finished (or cancelled, partial) gallery is recorded in the library.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from engine.protocol.gallery import MAX_COLUMNS, fill_template
from engine.protocol.training import METHOD_TITLES
from s2s_desktop import settings as app_settings
from s2s_desktop.library import Library, LibraryError, Subject, galleries
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.runs import Run
from s2s_desktop.pages.early_events import EarlyEvents
from s2s_desktop.widgets.gallery_grid import GalleryGrid
from s2s_desktop.widgets.image_viewer import ImageViewer
from s2s_desktop.widgets.setters import set_enabled, set_progress, set_text

ERROR_STYLE = "color: #a93226;"
HINT_STYLE = "color: palette(placeholder-text);"
PRIOR_TEMPLATE = "a photo of a {class}"
SCALED_METHODS = ("lora", "pivotal")


def is_toy(model_info: dict | None, settings: app_settings.Settings) -> bool:
    """The shipped 64-px demo model is loaded (or, before it loads, the active one)."""
    location = (model_info or {}).get("location") or (settings.active.source if settings.active else "")
    return Path(location).name == "toy-world"


def finished_runs(library: Library, subject_id: int) -> list[Run]:
    """Runs that can be a column: finished, with their exports (newest first)."""
    return [run for run in library_runs.runs_of(library, subject_id)
            if run.status == "finished" and (run.exports_dir / "run_config.json").is_file()]


def templates_of(text: str) -> list[str]:
    """The text box's templates: one a line, blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def gallery_title(params: dict) -> str:
    """How the library lists a gallery: its columns, then its size."""
    labels = [c.get("label") or c["key"] for c in params["columns"]]
    shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    return f"{shown} · {plural(len(params['prompts']), 'prompt')} × {plural(len(params['seeds']), 'seed')}"


# Short enough for a row beside its LoRA-scale box in the 420-px panel (the full title is the tooltip).
SHORT_METHOD_TITLES = {"dreambooth": "DreamBooth", "lora": "LoRA", "ti": "Textual Inversion",
                       "pivotal": "Pivotal (word + LoRA)"}


class RunColumnRow(QWidget):
    """A column choice: a checkbox, and for LoRA-style runs the LoRA scale it is drawn at."""

    def __init__(self, text: str, run: Run | None = None, checked: bool = False, parent=None):
        super().__init__(parent)
        self.run = run
        self.check = QCheckBox(text)
        self.check.setChecked(checked)
        self.check.setMinimumWidth(120)  # a long title is cut, not the panel widened (tooltip: the full title)
        self.check.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.scale: QDoubleSpinBox | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.check, 1)
        if run is not None and run.method in SCALED_METHODS:
            self.scale = QDoubleSpinBox()
            self.scale.setRange(0.0, 2.0)
            self.scale.setSingleStep(0.1)
            self.scale.setDecimals(2)
            self.scale.setValue(1.0)
            self.scale.setPrefix("scale ")
            self.scale.setToolTip("LoRA scale: 0 is the base model, 1 the run as trained")
            self.scale.setEnabled(checked)
            self.check.toggled.connect(self.scale.setEnabled)
            layout.addWidget(self.scale)


class ComparePanel(QWidget):
    evaluate_requested = Signal(int)  # a recorded gallery's id
    # a cell's "Edit" / "Put … in": {"path", "run_id" (None: the base model), "scale", "put_in"}
    edit_requested = Signal(dict)

    def __init__(self, engine, settings: app_settings.Settings, library: Library | None, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.library = library
        self.model_info: dict | None = None
        self.current_job: str | None = None
        self.job_params: dict | None = None
        self.job_subject_id: int | None = None
        self.gallery: galleries.Gallery | None = None  # the one on screen, once recorded
        self._early = EarlyEvents(engine, "gallery")
        self._list_touched = False  # the user picked a prompt list: a model change keeps it
        self._loading_list = False
        self._rows_subject: int | None = None  # whose runs the column rows are
        self._checkpoint_counts: dict[int, int] = {}  # run id → checkpoints it kept
        self.shown_columns: dict[str, dict] = {}  # the grid's columns by key (their adapters)
        self.shown_subject_id: int | None = None  # whose gallery the grid shows

        # ---- left: what to compare
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.subject = QComboBox()
        self.subject.currentIndexChanged.connect(self._on_subject_changed)
        self.columns_box = QGroupBox("Columns")
        self.columns_layout = QVBoxLayout(self.columns_box)
        self.columns_layout.setSpacing(4)
        self.column_rows: list[RunColumnRow] = []
        self.base_row = RunColumnRow("Base model", checked=True)
        self.base_row.check.toggled.connect(self.update_summary)
        self.runs_hint = QLabel()
        self.runs_hint.setWordWrap(True)
        self.runs_hint.setStyleSheet(HINT_STYLE)
        self.checkpoints = QComboBox()
        self.checkpoints.setToolTip("Add every checkpoint this run kept as columns: which step is best?")
        self.checkpoints.currentIndexChanged.connect(self.update_summary)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(QLabel("Checkpoints of"))
        checkpoint_row.addWidget(self.checkpoints, 1)
        self.checkpoint_row = QWidget()
        self.checkpoint_row.setLayout(checkpoint_row)
        checkpoint_row.setContentsMargins(0, 0, 0, 0)

        self.prompt_list = QComboBox()
        self.prompt_list.currentIndexChanged.connect(self._on_list_chosen)
        self.templates = QPlainTextEdit()
        self.templates.setPlaceholderText("one prompt a line: a {token} {class} on the beach")
        self.templates.setFixedHeight(112)
        self.templates.setToolTip("{token} is the subject's word, {class} its class noun; lines starting "
                                  "with # are skipped")
        self.templates.textChanged.connect(self._on_templates_edited)
        self.save_list_button = QPushButton("Save list as…")
        self.save_list_button.clicked.connect(self.ask_save_list)
        list_row = QHBoxLayout()
        list_row.addWidget(self.prompt_list, 1)
        list_row.addWidget(self.save_list_button)

        self.seeds = QLineEdit("0-3")
        self.seeds.setPlaceholderText("0-3 or 1,5,9")
        self.seeds.setToolTip("Every column draws every prompt with each of these seeds (the same noise)")
        self.seeds.textChanged.connect(self.update_summary)
        self.seeds_error = QLabel()
        self.seeds_error.setWordWrap(True)
        self.seeds_error.setStyleSheet(ERROR_STYLE)
        self.seeds_error.hide()
        self.steps = QSpinBox()
        self.steps.setRange(1, 500)
        self.steps.setValue(settings.generate.steps)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 50.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(settings.generate.guidance)
        self.width_box, self.height_box = self._size_box(), self._size_box()
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        size_row.addStretch(1)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(4)
        self.batch.setToolTip("Images per pipeline call (more is faster on a GPU, needs more memory)")
        self.prior = QCheckBox()
        self.prior.setToolTip("Each column also draws the plain class prompt with every seed: how much of the "
                              "class it still knows (the PRES score on the Evaluate page)")
        self.prior.toggled.connect(self.update_summary)

        form = QFormLayout()
        form.addRow("Prompt list", list_row)
        form.addRow(self.templates)
        form.addRow("Seeds", self.seeds)
        form.addRow("", self.seeds_error)
        sampling = QHBoxLayout()
        sampling.addWidget(self.steps, 1)
        sampling.addWidget(QLabel("Guidance"))
        sampling.addWidget(self.guidance, 1)
        size_row.addWidget(QLabel("Batch"))
        size_row.addWidget(self.batch)
        form.addRow("Steps", sampling)
        form.addRow("Size (px)", size_row)
        form.addRow(self.prior)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.generate_button = QPushButton("Generate gallery")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumHeight(34)
        self.generate_button.clicked.connect(self.on_generate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop; the images made so far are kept as a partial gallery")
        self.cancel_button.clicked.connect(self.on_cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        setup = QWidget()
        setup_layout = QVBoxLayout(setup)
        setup_layout.setContentsMargins(0, 0, 12, 0)
        setup_layout.addWidget(self.model_label)
        subject_row = QHBoxLayout()
        subject_row.addWidget(QLabel("Subject"))
        subject_row.addWidget(self.subject, 1)
        setup_layout.addLayout(subject_row)
        setup_layout.addWidget(self.columns_box)
        setup_layout.addLayout(form)
        setup_layout.addStretch(1)
        for combo in setup.findChildren(QComboBox):  # long run titles must not widen the panel
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        scroll = QScrollArea()
        scroll.setWidget(setup)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addWidget(self.summary)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left.setFixedWidth(420)

        # ---- right: the grid
        self.title = QLabel("<b>Gallery</b>")
        self.title.setWordWrap(True)
        self.earlier = QComboBox()
        self.earlier.setToolTip("Reopen a gallery made earlier (from its manifest)")
        self.earlier.setMinimumWidth(220)
        self.earlier.activated.connect(self._on_earlier_chosen)
        self.seed_view = QComboBox()
        self.seed_view.setToolTip("Every seed in each cell, or one seed at a time, larger")
        self.seed_view.currentIndexChanged.connect(self._on_seed_view)
        self.export_button = QPushButton("Export grid PNG…")
        self.export_button.clicked.connect(self.choose_export)
        self.evaluate_button = QPushButton("Evaluate…")
        self.evaluate_button.setToolTip("Score these columns on the Evaluate page")
        self.evaluate_button.clicked.connect(self._on_evaluate)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self.open_folder)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(QLabel("Earlier galleries"))
        top.addWidget(self.earlier)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Show"))
        tools.addWidget(self.seed_view)
        tools.addStretch(1)
        for button in (self.export_button, self.evaluate_button, self.folder_button):
            tools.addWidget(button)
        self.grid = GalleryGrid()
        self.grid.image_clicked.connect(self.show_image)
        self.grid.image_menu_requested.connect(self.show_image_menu)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addLayout(top)
        right_layout.addLayout(tools)
        right_layout.addWidget(self.grid, 1)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(left)
        layout.addWidget(right, 1)

        engine.event.connect(self.on_event)
        engine.state_changed.connect(self._on_engine_state)
        self.refresh_prompt_lists()
        self.set_model_info(getattr(getattr(engine, "client", None), "loaded_model", None))
        self.refresh_subjects()
        self._update_result_buttons()

    def _size_box(self) -> QSpinBox:
        box = QSpinBox()
        box.setRange(64, 2048)
        box.setSingleStep(64)
        box.setValue(512)
        return box

    def showEvent(self, event) -> None:  # noqa: N802  (subjects and runs change on other pages)
        if self.current_job is None:
            self.refresh_subjects()
        super().showEvent(event)

    # ------------------------------------------------------------------ model
    def set_model_info(self, info: dict | None, waiting: str = "") -> None:
        had = self.model_info
        self.model_info = info
        if info:
            text = f"Model: <b>{html.escape(info['name'])}</b> · {info.get('device', '')}"
            native = int(info.get("native_resolution") or 0)
            if native and (had or {}).get("name") != info.get("name"):
                self.width_box.setValue(native)
                self.height_box.setValue(native)
        elif waiting:
            text = f"Loading the model <b>{html.escape(waiting)}</b>…"
        elif self.settings.active is not None:
            text = f"Model: <b>{html.escape(self.settings.active.name)}</b> (not loaded yet)"
        else:
            text = "No model yet: add one with <b>Models…</b> on the Single tab."
        set_text(self.model_label, text)
        self.base_row.check.setText(f"Base model ({info['name']})" if info else "Base model")
        if not self._list_touched and self.prompt_list.currentData() != self.default_prompt_list():
            self.select_prompt_list(self.default_prompt_list())

    def _on_engine_state(self, state: str, detail: str) -> None:
        if state == "model":
            self.set_model_info(self.engine.client.loaded_model)
        elif state in ("loading", "died", "failed", "stopped"):
            self.set_model_info(None, waiting=detail if state == "loading" else "")

    def is_toy_model(self) -> bool:
        return is_toy(self.model_info, self.settings)

    # ------------------------------------------------------------------ subjects and columns
    def current_subject(self) -> Subject | None:
        subject_id = self.subject.currentData()
        if self.library is None or subject_id is None:
            return None
        try:
            return self.library.subject(subject_id)
        except LibraryError:
            return None

    def refresh_subjects(self, select_id: int | None = None) -> None:
        if self.library is None:
            return
        keep = select_id if select_id is not None else self.subject.currentData()
        subjects = self.library.subjects()
        self.subject.blockSignals(True)
        self.subject.clear()
        for subject in subjects:
            self.subject.addItem(f"{subject.name} ({subject.class_noun})", subject.id)
        index = self.subject.findData(keep)
        self.subject.setCurrentIndex(index if index >= 0 else 0)
        self.subject.blockSignals(False)
        self._on_subject_changed()

    def _on_subject_changed(self, *_args) -> None:
        subject = self.current_subject()
        old = {(row.run.id if row.run else None): (row.check.isChecked(), row.scale.value() if row.scale else 1.0)
               for row in self.column_rows}
        same_subject = bool(self.column_rows) and self._rows_subject == (subject.id if subject else None)
        for row in self.column_rows:
            if row is not self.base_row:
                row.setParent(None)
                row.deleteLater()
        while self.columns_layout.count():
            self.columns_layout.takeAt(0)
        self.column_rows = [self.base_row]
        self.columns_layout.addWidget(self.base_row)
        runs = finished_runs(self.library, subject.id) if subject is not None and self.library else []
        for run in runs:
            checked, scale = old.get(run.id, (False, 1.0)) if same_subject else (False, 1.0)
            row = RunColumnRow(f"#{run.id} {SHORT_METHOD_TITLES.get(run.method, run.method)} · "
                               f"{run.result.get('step', run.step)} steps", run, checked)
            row.check.setToolTip(f"{METHOD_TITLES.get(run.method, run.method)}, trained with {run.model or 'its model'}")
            if row.scale is not None:
                row.scale.setValue(scale)
                row.scale.valueChanged.connect(self.update_summary)
            row.check.toggled.connect(self.update_summary)
            row.check.setToolTip(f"Trained {run.finished_at or run.created_at}; token {run.token}")
            self.column_rows.append(row)
            self.columns_layout.addWidget(row)
        self._rows_subject = subject.id if subject else None
        if subject is None:
            self.runs_hint.setText("Add a subject on the Library page to compare its runs; the base model "
                                   "alone draws the prompts with the token as an unknown word.")
        elif not runs:
            self.runs_hint.setText(f"{html.escape(subject.name)} has no finished runs yet: train one on the "
                                   "Train page. The base model alone shows what it draws without training.")
        else:
            self.runs_hint.setText("")
        self.runs_hint.setVisible(bool(self.runs_hint.text()))
        self.columns_layout.addWidget(self.runs_hint)
        keep = self.checkpoints.currentData() if same_subject else None
        self.checkpoints.blockSignals(True)
        self.checkpoints.clear()
        self.checkpoints.addItem("(none)", None)
        self._checkpoint_counts = {}
        for run in runs:
            count = len(galleries.checkpoint_columns(run))
            if count:
                self._checkpoint_counts[run.id] = count
                self.checkpoints.addItem(f"#{run.id} {METHOD_TITLES.get(run.method, run.method)} ({count} checkpoints)", run.id)
        self.checkpoints.setCurrentIndex(max(self.checkpoints.findData(keep), 0))
        self.checkpoints.blockSignals(False)
        self.checkpoint_row.setVisible(self.checkpoints.count() > 1)
        self.columns_layout.addWidget(self.checkpoint_row)
        noun = subject.class_noun if subject else "{class}"
        self.prior.setText(f"Also draw the class prompt “{fill_template(PRIOR_TEMPLATE, '', noun)}” (for PRES)")
        self.refresh_earlier()
        self.update_summary()

    def chosen_columns(self) -> list[dict]:
        """The gallery's columns, in order: the base model, checked runs, then a run's checkpoints."""
        columns = []
        if self.base_row.check.isChecked():
            columns.append(galleries.base_column((self.model_info or {}).get("name", "")))
        for row in self.column_rows:
            if row.run is not None and row.check.isChecked():
                columns.append(galleries.run_column(row.run, row.scale.value() if row.scale else 1.0))
        run_id = self.checkpoints.currentData()
        if run_id is not None and self.library is not None:
            columns += galleries.checkpoint_columns(library_runs.get_run(self.library, run_id))
        return columns

    def chosen_runs(self) -> list[Run]:
        return [row.run for row in self.column_rows if row.run is not None and row.check.isChecked()]

    # ------------------------------------------------------------------ prompt lists
    def prompt_list_home(self) -> Path:
        return self.library.home if self.library is not None else app_settings.app_home()

    def refresh_prompt_lists(self, select: str | None = None) -> None:
        keep = select or self.prompt_list.currentData()
        self._loading_list = True
        self.prompt_list.clear()
        self._lists = galleries.prompt_lists(self.prompt_list_home())
        for name in self._lists:
            self.prompt_list.addItem(galleries.PROMPT_LIST_TITLES.get(name, name), name)
        self._loading_list = False
        self.select_prompt_list(keep if keep and self.prompt_list.findData(keep) >= 0 else self.default_prompt_list())

    def default_prompt_list(self) -> str:
        return "toy-world" if self.is_toy_model() else "paper-20"

    def select_prompt_list(self, name: str) -> None:
        index = self.prompt_list.findData(name)
        if index < 0:
            return
        self._loading_list = True
        self.prompt_list.setCurrentIndex(index)
        self._loading_list = False
        self._load_list(name)

    def _on_list_chosen(self, _index: int) -> None:
        if self._loading_list:
            return
        name = self.prompt_list.currentData()
        if name:
            self._list_touched = True
            self._load_list(name)

    def _on_templates_edited(self) -> None:
        if not self._loading_list:
            self._list_touched = True  # a model change no longer swaps the list under the user's edits
        self.update_summary()

    def _load_list(self, name: str) -> None:
        try:
            prompts = galleries.read_prompt_list(self._lists[name])
        except (OSError, KeyError) as exc:
            self.show_status(f"Could not read the prompt list {name}: {exc}", error=True)
            return
        self._loading_list = True
        self.templates.setPlainText("\n".join(prompts))
        self._loading_list = False

    def ask_save_list(self) -> None:
        name, ok = QInputDialog.getText(self, "Save the prompt list", "Name of the list:")
        if ok and name.strip():
            self.save_list(name)

    def save_list(self, name: str) -> Path | None:
        prompts = templates_of(self.templates.toPlainText())
        if not prompts:
            self.show_status("There are no prompts to save.", error=True)
            return None
        try:
            path = galleries.save_prompt_list(self.prompt_list_home(), name, prompts)
        except (LibraryError, OSError) as exc:
            self.show_status(f"Could not save the list: {exc}", error=True)
            return None
        self._list_touched = True
        self.refresh_prompt_lists(select=path.stem)
        self.show_status(f"Saved {len(prompts)} prompts as “{path.stem}”.")
        return path

    # ------------------------------------------------------------------ parameters
    def parsed_seeds(self) -> tuple[list[int], str]:
        try:
            return galleries.parse_seeds(self.seeds.text()), ""
        except LibraryError as exc:
            return [], str(exc)

    def update_summary(self, *_args) -> None:
        seeds, problem = self.parsed_seeds()
        set_text(self.seeds_error, problem)
        self.seeds_error.setVisible(bool(problem))
        prompts = templates_of(self.templates.toPlainText())
        columns = (int(self.base_row.check.isChecked()) + len(self.chosen_runs())
                   + self._checkpoint_count())
        images = columns * len(prompts) * len(seeds)
        prior = columns * len(seeds) if self.prior.isChecked() else 0
        text = (f"{plural(columns, 'column')} × {plural(len(prompts), 'prompt')} × {plural(len(seeds), 'seed')} = "
                f"<b>{images + prior}</b> images")
        if prior:
            text += f" ({prior} of the class prompt)"
        set_text(self.summary, text)

    def _checkpoint_count(self) -> int:
        return self._checkpoint_counts.get(self.checkpoints.currentData(), 0)

    def params(self) -> tuple[dict | None, str]:
        """The gallery job's parameters, or None and what is wrong."""
        subject = self.current_subject()
        if subject is None:
            return None, "Choose a subject (add one on the Library page)."
        seeds, problem = self.parsed_seeds()
        if problem:
            return None, f"Seeds: {problem}"
        prompts = templates_of(self.templates.toPlainText())
        if not prompts:
            return None, "Add at least one prompt (one a line)."
        try:
            columns = self.chosen_columns()
        except LibraryError as exc:
            return None, str(exc)
        if not columns:
            return None, "Tick at least one column: the base model or a run."
        if len(columns) > MAX_COLUMNS:
            return None, f"{len(columns)} columns are too many for one gallery (at most {MAX_COLUMNS})."
        if self.model_info is None:
            return None, "No model is loaded yet: wait for it, or choose one with Models… on the Single tab."
        runs = self.chosen_runs()
        token = next((run.token for run in runs if run.token), subject.token)
        params = {
            "columns": columns, "prompts": prompts, "token": token, "class_noun": subject.class_noun,
            "seeds": seeds, "prior_prompt": PRIOR_TEMPLATE if self.prior.isChecked() else "",
            "negative_prompt": self.settings.generate.negative_prompt, "steps": self.steps.value(),
            "guidance": self.guidance.value(), "width": self.width_box.value() // 8 * 8,
            "height": self.height_box.value() // 8 * 8, "scheduler": "ddim", "batch": self.batch.value(),
            "out_dir": str(galleries.new_gallery_folder(self.library, subject, app_settings.outputs_dir())),
        }
        try:
            protocol.validate_job("gallery", params)
        except protocol.ProtocolError as exc:
            return None, exc.message + (f" — {exc.hint}" if exc.hint else "")
        return params, ""

    # ------------------------------------------------------------------ running
    @asyncSlot()
    async def on_generate(self) -> None:
        if self.current_job is not None or self._early.submitting:
            return
        params, problem = self.params()
        if params is None:
            self.show_status(problem, error=True)
            return
        self.job_params, self.job_subject_id = params, self.current_subject().id
        self.gallery = None
        self.shown_columns = {c["key"]: c for c in params["columns"]}
        self.shown_subject_id = self.job_subject_id
        self.grid.set_layout(
            [(c["key"], c["label"]) for c in params["columns"]],
            [fill_template(t, params["token"], params["class_noun"]) for t in params["prompts"]],
            params["seeds"],
            fill_template(params["prior_prompt"], "", params["class_noun"]) if params["prior_prompt"] else "",
        )
        self._fill_seed_view(params["seeds"])
        self.title.setText(f"<b>New gallery</b> · {html.escape(gallery_title(params))}")
        self._update_result_buttons()
        set_enabled(self.generate_button, False)
        set_progress(self.progress, 0, 1)
        self.show_status("Queued…")
        self._early.submitting = True
        try:
            job = await self.engine.submit("gallery", params, label=f"Gallery {self.current_subject().name}")
        except Exception as exc:
            self._early.submitting = False
            set_enabled(self.generate_button, True)
            self.show_status(f"Could not start: {exc}", error=True)
            return
        self._early.submitting = False
        self.current_job = job
        set_enabled(self.cancel_button, True)
        for message in self._early.release(job):
            self.on_event(message)

    def on_cancel(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)
            self.show_status("Cancelling… (the images made so far are kept)")

    def on_event(self, message: dict) -> None:
        job = message.get("job")
        if job != self.current_job or job is None:
            self._early.hold(message)  # events can come before submit() returns
            return
        name = message.get("event")
        if name == "started":
            self.show_status("Generating…")
        elif name == "progress":
            total = int(message.get("total") or 0)
            set_progress(self.progress, int(message.get("step") or 0), total or 1)
            images, done = message.get("images"), message.get("image")
            eta = message.get("eta_s")
            text = f"Image {min(int(done or 0) + 1, int(images))} of {images}" if images else "Generating"
            set_text(self.status, text + (f" · about {eta:.0f} s left" if eta else ""))
        elif name == "artifact" and message.get("kind") == "image":
            self.grid.add_image(message.get("column", ""), int(message.get("row", 0)), int(message.get("seed", 0)),
                                message["path"], message.get("parameters", ""))
        elif name in protocol.TERMINAL_EVENTS:
            self._on_end(name, message)

    def _on_end(self, name: str, message: dict) -> None:
        self.current_job = None
        set_enabled(self.generate_button, True)
        set_enabled(self.cancel_button, False)
        params, self.job_params = self.job_params, None
        made = self.grid.image_count()
        expected = len(self.grid.thumbs)
        recorded = self.record(params) if made and params else None
        saved = f" Saved as gallery #{recorded.id}." if recorded else ""
        if name == "finished":
            set_progress(self.progress, 1, 1)
            seconds = (message.get("result") or {}).get("seconds")
            took = f" in {seconds:.1f} s" if seconds is not None else ""
            self.show_status(f"Done: {made} images{took}.{saved}")
        elif name == "cancelled":
            self.show_status(f"Cancelled after {made} of {expected} images." + (saved or " Nothing was kept."))
        else:
            error = message.get("error") or {}
            hint = error.get("hint")
            self.show_status(f"Failed: {error.get('message')}" + (f"\n{hint}" if hint else "")
                             + (f"\nKept {made} of {expected} images.{saved}" if recorded else ""), error=True)

    def record(self, params: dict) -> galleries.Gallery | None:
        """Keep the gallery (the manifest lists what was made, also after a cancel) in the library."""
        if self.library is None:
            return None
        try:
            self.gallery = galleries.record_gallery(self.library, self.job_subject_id, params, gallery_title(params))
        except (LibraryError, OSError) as exc:
            self.show_status(f"Not added to the library: {exc}", error=True)
            return None
        self.refresh_earlier(select_id=self.gallery.id)
        self._show_title()
        self._update_result_buttons()
        return self.gallery

    # ------------------------------------------------------------------ earlier galleries
    def refresh_earlier(self, select_id: int | None = None) -> None:
        subject = self.current_subject()
        self.earlier.blockSignals(True)
        self.earlier.clear()
        stored = galleries.list_galleries(self.library, subject.id) if subject is not None and self.library else []
        self.earlier.addItem(f"{len(stored)} stored" if stored else "none yet", None)
        for gallery in stored:
            self.earlier.addItem(f"#{gallery.id} · {gallery.created_at[:16]}", gallery.id)
            self.earlier.setItemData(self.earlier.count() - 1, gallery.title, Qt.ToolTipRole)
        index = self.earlier.findData(select_id if select_id is not None else (self.gallery.id if self.gallery else None))
        self.earlier.setCurrentIndex(max(index, 0))
        self.earlier.setEnabled(bool(stored))
        self.earlier.blockSignals(False)

    def _on_earlier_chosen(self, _index: int) -> None:
        gallery_id = self.earlier.currentData()
        if gallery_id is not None and self.current_job is None:
            self.open_gallery(gallery_id)

    def open_gallery(self, gallery_id: int) -> bool:
        """Show a stored gallery from its manifest."""
        try:
            gallery = galleries.get_gallery(self.library, gallery_id)
            manifest = gallery.manifest()
        except LibraryError as exc:
            self.show_status(f"Could not open the gallery: {exc}", error=True)
            return False
        self.gallery = gallery
        self.shown_columns = {c["key"]: c for c in manifest.get("columns", [])}
        self.shown_subject_id = gallery.subject_id
        shown = self.grid.load_manifest(gallery.folder, manifest)
        self._fill_seed_view(manifest.get("seeds", []))
        self._show_title()
        self._update_result_buttons()
        listed = len(manifest.get("images", []))
        missing = f" ({listed - shown} image files are missing)" if shown < listed else ""
        self.show_status(f"Opened gallery #{gallery.id}: {shown} images{missing}.")
        return True

    def _show_title(self) -> None:
        if self.gallery is not None:
            set_text(self.title, f"<b>Gallery #{self.gallery.id}</b> · {html.escape(self.gallery.title)}")

    def _fill_seed_view(self, seeds: list[int]) -> None:
        self.seed_view.blockSignals(True)
        self.seed_view.clear()
        self.seed_view.addItem("All seeds", None)
        for seed in seeds:
            self.seed_view.addItem(f"Seed {seed}", seed)
        self.seed_view.blockSignals(False)
        self.grid.set_seed_filter(None)

    def _on_seed_view(self, _index: int) -> None:
        self.grid.set_seed_filter(self.seed_view.currentData())

    def _update_result_buttons(self) -> None:
        has = self.gallery is not None
        set_enabled(self.export_button, has)
        set_enabled(self.evaluate_button, has)
        set_enabled(self.folder_button, has or self.job_params is not None)
        set_enabled(self.seed_view, bool(self.grid.seeds) and len(self.grid.seeds) > 1)

    # ------------------------------------------------------------------ results
    def show_image(self, path: str, parameters: str) -> ImageViewer:
        from s2s_desktop.image_meta import read_parameters

        viewer = ImageViewer(path, parameters or read_parameters(path), self, reusable=False)
        viewer.show()
        return viewer

    def column_run(self, key: str) -> tuple[int | None, float | None]:
        """The run a grid column drew with (a checkpoint column: its run) and its LoRA scale."""
        match = re.match(r"^run(\d+)", key or "")
        if match is None:
            return None, None
        adapter = (self.shown_columns.get(key) or {}).get("adapter") or {}
        return int(match.group(1)), adapter.get("scale")

    def put_in_run(self, key: str) -> Run | None:
        """Whose subject "Put … in" puts into a picture: the column's run, else the subject's newest
        finished one."""
        run_id, _scale = self.column_run(key)
        if run_id is not None and self.library is not None:
            try:
                return library_runs.get_run(self.library, run_id)
            except LibraryError:
                pass
        subject_id = self.shown_subject_id if self.shown_subject_id is not None else self.subject.currentData()
        if subject_id is None or self.library is None:
            return None
        runs = finished_runs(self.library, subject_id)
        return runs[0] if runs else None

    def image_menu(self, path: str, key: str) -> QMenu:
        """A cell image's menu: open it on the Edit page, or put the subject into it there."""
        menu = QMenu(self)
        run_id, scale = self.column_run(key)
        edit = menu.addAction("Edit")
        edit.setToolTip("Open this image on the Edit page (with its column's run, so it regenerates as drawn)")
        edit.triggered.connect(lambda: self.edit_requested.emit(
            {"path": path, "run_id": run_id, "scale": scale, "put_in": False}))
        run = self.put_in_run(key)
        subject = None
        if run is not None:
            try:
                subject = self.library.subject(run.subject_id)
            except LibraryError:
                subject = None
        put_in = menu.addAction(f"Put {subject.name} in" if subject else "Put subject in")
        put_in.setEnabled(run is not None)
        put_in.setToolTip(f"Open it on the Edit page with run #{run.id} and put the subject into it"
                          if run is not None else "The subject has no finished run yet: train one first")
        put_in.triggered.connect(lambda: self.edit_requested.emit(
            {"path": path, "run_id": run.id if run else None, "scale": scale if run_id is not None else None,
             "put_in": True}))
        return menu

    def show_image_menu(self, path: str, key: str, where) -> None:
        self.image_menu(path, key).exec(where)

    def choose_export(self) -> None:
        if self.gallery is None:
            return
        default = str(Path.home() / f"gallery-{self.gallery.id}.png")
        path, _ = QFileDialog.getSaveFileName(self, "Export the grid", default, "PNG image (*.png)")
        if path:
            self.export_grid(path)

    def export_grid(self, path: str | Path) -> Path | None:
        try:
            from s2s_desktop import reports

            written = reports.grid_png(self.gallery.folder, Path(path).with_suffix(".png"))
        except Exception as exc:  # a missing or unreadable image, a full disk …
            self.show_status(f"Could not export the grid: {exc}", error=True)
            return None
        self.show_status(f"Exported the grid to {written}.")
        return Path(written)

    def _on_evaluate(self) -> None:
        if self.gallery is not None:
            self.evaluate_requested.emit(self.gallery.id)

    def open_folder(self) -> None:
        folder = self.gallery.folder if self.gallery else (Path(self.job_params["out_dir"]) if self.job_params else None)
        if folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def show_status(self, text: str, error: bool = False) -> None:
        style = ERROR_STYLE if error else ""
        if self.status.styleSheet() != style:
            self.status.setStyleSheet(style)
        set_text(self.status, text)

    def shutdown(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)
