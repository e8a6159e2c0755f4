"""Evaluate page: score a stored gallery's columns (the base model, runs, checkpoints) against the
subject's photos, and compare them in a sortable table you can export. A toggle at the top switches
to "Putting the subject in" (:class:`InsertionPanel`): the runs compared on inserting the subject.

Left: the subject and gallery, what the scores will be computed from (the subject's photos, the
feature models from settings, the toy evaluator for the demo subjects), which metrics, and the
Evaluate button. Right: the recommended column, the table (:class:`EvaluationTable`), its notes and
the exports. Scores are kept in the library and come back when the gallery is picked again.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from engine.protocol.gallery import DEFAULT_FEATURE_MODELS, FEATURE_MODELS, METRICS
from s2s_desktop import settings as app_settings
from s2s_desktop.demo import DEMO_MODEL_NAME, resources_dir, toy_model_path
from s2s_desktop.library import Library, LibraryError, Subject, galleries
from s2s_desktop.pages.early_events import EarlyEvents
from s2s_desktop.pages.evaluate_insertion import InsertionPanel
from s2s_desktop.widgets.evaluation_table import BEST_MARK, EvaluationTable, notes_text
from s2s_desktop.widgets.setters import set_enabled, set_progress, set_text

ERROR_STYLE = "color: #a93226;"
NOTES_STYLE = "QLabel { background: palette(alternate-base); border: 1px solid palette(mid); padding: 6px; }"
BEST_STYLE = "QLabel { background: rgba(46, 160, 67, 40); border: 1px solid rgba(46, 160, 67, 140); padding: 6px; }"
NO_SUBJECT = -1  # the subject picker's entry for base-model-only galleries
MAX_REAL_IMAGES = 500
FEATURE_TITLES = {"clip": "CLIP", "dino": "DINO", "inception": "Inception", "lpips": "LPIPS"}


def metrics_needing(model: str) -> list[str]:
    return [meta["title"] for meta in METRICS.values() if meta["model"] == model]


def feature_summary(sources: dict[str, str]) -> str:
    """What each feature model will be: the user's choice, the toy CLIP for a toy gallery, or the default."""
    toy_clip = str(resources_dir() / "toy-clip")
    parts = []
    for name in FEATURE_MODELS:
        value = sources.get(name, "").strip()
        shown = "toy-world CLIP" if value == toy_clip else (Path(value).name or value if value else "default")
        parts.append(f"{FEATURE_TITLES[name]}: {html.escape(shown)}")
    return " · ".join(parts)


class FeatureModelsDialog(QDialog):
    """Where each feature model comes from: a folder, a file or a hub id ("" = the default)."""

    def __init__(self, settings: app_settings.Settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Feature models")
        self.fields: dict[str, QLineEdit] = {}
        form = QFormLayout()
        intro = QLabel("The models the scores are computed with. Leave a field empty for the default; "
                       "give a local folder or file to work offline.")
        intro.setWordWrap(True)
        for name in FEATURE_MODELS:
            field = QLineEdit(getattr(settings.feature_models, name))
            default = DEFAULT_FEATURE_MODELS.get(name)
            field.setPlaceholderText(f"default: {default}" if default else "default: the engine's built-in choice")
            field.setMinimumWidth(340)
            folder = QToolButton()
            folder.setText("Folder…")
            folder.clicked.connect(lambda _=False, f=field: self._browse(f, folder=True))
            file = QToolButton()
            file.setText("File…")
            file.clicked.connect(lambda _=False, f=field: self._browse(f, folder=False))
            row = QHBoxLayout()
            row.addWidget(field, 1)
            row.addWidget(folder)
            row.addWidget(file)
            label = QLabel(f"{FEATURE_TITLES[name]}")
            label.setToolTip("Used by " + ", ".join(metrics_needing(name)))
            form.addRow(label, row)
            uses = QLabel(f"<small>for {', '.join(metrics_needing(name))}</small>")
            form.addRow("", uses)
            self.fields[name] = field
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self, field: QLineEdit, folder: bool) -> None:
        start = field.text() or str(Path.home())
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a model folder", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a model file", start)
        if path:
            field.setText(path)

    def accept(self) -> None:
        for name, field in self.fields.items():
            setattr(self.settings.feature_models, name, field.text().strip())
        self.settings.save()
        super().accept()


class EvaluatePage(QWidget):
    def __init__(self, engine, settings: app_settings.Settings, library: Library, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        self.library = library
        self.model_info: dict | None = None
        self.gallery: galleries.Gallery | None = None
        self.manifest: dict | None = None
        self.evaluation: dict | None = None
        self.current_job: str | None = None
        self.job_gallery_id: int | None = None
        self._early = EarlyEvents(engine, "evaluate", limit=2000)

        # ---- left: what to score
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.subject = QComboBox()
        self.subject.currentIndexChanged.connect(self._on_subject_changed)
        self.gallery_box = QComboBox()
        self.gallery_box.currentIndexChanged.connect(self._on_gallery_changed)
        self.gallery_info = QLabel()
        self.gallery_info.setWordWrap(True)
        self.gallery_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.real_info = QLabel()
        self.real_info.setWordWrap(True)
        pick = QFormLayout()
        pick.addRow("Subject", self.subject)
        pick.addRow("Gallery", self.gallery_box)

        self.metric_boxes: dict[str, QCheckBox] = {}
        metrics_group = QGroupBox("Metrics")
        metrics_grid = QGridLayout(metrics_group)
        for i, (name, meta) in enumerate(METRICS.items()):
            box = QCheckBox(meta["title"])
            box.setChecked(True)
            box.setToolTip(meta["note"])
            self.metric_boxes[name] = box
            metrics_grid.addWidget(box, i // 2, i % 2)
        self.features_label = QLabel()
        self.features_label.setWordWrap(True)
        self.features_button = QPushButton("Feature models…")
        self.features_button.setToolTip("Which CLIP, DINO, Inception and LPIPS models compute the scores")
        self.features_button.clicked.connect(self.edit_feature_models)
        features_row = QHBoxLayout()
        features_row.addWidget(self.features_label, 1)
        features_row.addWidget(self.features_button, 0, Qt.AlignTop)

        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setDefault(True)
        self.evaluate_button.setMinimumHeight(34)
        self.evaluate_button.clicked.connect(self.on_evaluate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.on_cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.evaluate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        setup = QWidget()
        setup_layout = QVBoxLayout(setup)
        setup_layout.setContentsMargins(0, 0, 8, 0)
        setup_layout.addWidget(self.model_label)
        setup_layout.addLayout(pick)
        setup_layout.addWidget(self.gallery_info)
        setup_layout.addWidget(self.real_info)
        setup_layout.addWidget(metrics_group)
        setup_layout.addLayout(features_row)
        setup_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(setup)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left.setFixedWidth(360)

        # ---- right: the scores
        self.title = QLabel("<b>Scores</b>")
        self.title.setWordWrap(True)
        self.best = QLabel()
        self.best.setWordWrap(True)
        self.best.setStyleSheet(BEST_STYLE)
        self.best.hide()
        self.table = EvaluationTable()
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet(NOTES_STYLE)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.notes.hide()
        self.empty = QLabel()
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignCenter)
        self.export_buttons: dict[str, QPushButton] = {}
        exports = QHBoxLayout()
        exports.addWidget(QLabel("Export"))
        for kind, text, tip in (
            ("csv", "CSV…", "The table as comma-separated values (a spreadsheet opens it)"),
            ("markdown", "Markdown…", "The table as Markdown (for a README or notes)"),
            ("html", "HTML report…", "One page: the settings, the table and the grid of images"),
            ("grid", "Grid PNG…", "The gallery's images as one picture, a row per prompt"),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, k=kind: self.choose_export(k))
            self.export_buttons[kind] = button
            exports.addWidget(button)
        exports.addStretch(1)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self.open_folder)
        exports.addWidget(self.folder_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.title)
        right_layout.addWidget(self.best)
        right_layout.addWidget(self.table, 10)  # up to its own rows' height (EvaluationTable caps it), then the filler
        right_layout.addWidget(self.empty, 1)
        right_layout.addWidget(self.notes)
        self.filler = QWidget()  # takes the height a short table leaves
        right_layout.addWidget(self.filler, 1)
        right_layout.addLayout(exports)

        gallery_mode = QWidget()
        gallery_layout = QHBoxLayout(gallery_mode)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        gallery_layout.addWidget(left)
        gallery_layout.addWidget(right, 1)
        # the second mode: the runs put the subject into the same pictures (its own panel, same table)
        self.insertion = InsertionPanel(engine, settings, library)
        self.modes = QStackedWidget()
        self.modes.addWidget(gallery_mode)
        self.modes.addWidget(self.insertion)
        self.mode_buttons: dict[str, QPushButton] = {}
        mode_row = QHBoxLayout()
        mode_group = QButtonGroup(self)
        for index, (mode, text, tip) in enumerate((
            ("gallery", "Gallery", "Score a gallery's columns: the runs drawing the subject in new scenes"),
            ("insertion", "Putting the subject in", "Score how each run puts the subject into the same pictures "
                                                     "(subject, layout kept, rest kept)"),
        )):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setChecked(index == 0)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, i=index: self.modes.setCurrentIndex(i))
            mode_group.addButton(button)
            mode_row.addWidget(button)
            self.mode_buttons[mode] = button
        mode_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(mode_row)
        layout.addWidget(self.modes, 1)

        engine.event.connect(self.on_event)
        engine.state_changed.connect(self._on_engine_state)
        self.set_model_info(getattr(getattr(engine, "client", None), "loaded_model", None))
        self._show_features()
        self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802  (galleries are made on the Generate page)
        if self.current_job is None:
            self.refresh()
        super().showEvent(event)

    # ------------------------------------------------------------------ model
    def _on_engine_state(self, state: str, detail: str) -> None:
        if state == "model":
            self.set_model_info(self.engine.client.loaded_model)
        elif state in ("loading", "died", "failed", "stopped"):
            self.set_model_info(None)

    def set_model_info(self, info: dict | None) -> None:
        self.model_info = info
        self.insertion.set_model_info(info)
        name = (info or {}).get("name") or (self.settings.active.name if self.settings.active else "")
        set_text(self.model_label, f"Active model: <b>{html.escape(name)}</b> (scoring uses its own feature "
                                   "models, not this one)" if name else "")
        self._update_inputs()

    def model_source(self) -> str:
        """Where the gallery's model came from (its manifest names it), for the toy-world checks;
        the active model's when the manifest does not say."""
        name = ((self.manifest or {}).get("settings") or {}).get("model", "")
        entry = self.settings.find_model(name) if name else self.settings.active
        if entry is not None:
            return entry.source
        return str(toy_model_path()) if name == DEMO_MODEL_NAME else ""

    def toy_subject(self) -> str:
        """The toy evaluator's subject: a demo subject (Dotty, Stripe, Smiley) on a toy-model gallery."""
        return galleries.toy_subject_for(self.current_subject(), self.model_source())

    def feature_sources(self) -> dict[str, str]:
        """The settings' feature models, and the toy CLIP for a toy-world gallery without a CLIP chosen."""
        return galleries.feature_sources_for(self.settings.feature_models.sources(), self.model_source())

    # ------------------------------------------------------------------ subjects and galleries
    def current_subject(self) -> Subject | None:
        subject_id = self.subject.currentData()
        if subject_id is None or subject_id == NO_SUBJECT:
            return None
        try:
            return self.library.subject(subject_id)
        except LibraryError:
            return None

    def refresh(self, subject_id: int | None = None, gallery_id: int | None = None) -> None:
        keep_subject = subject_id if subject_id is not None else self.subject.currentData()
        keep_gallery = gallery_id if gallery_id is not None else self.gallery_box.currentData()
        self.subject.blockSignals(True)
        self.subject.clear()
        for subject in self.library.subjects():
            self.subject.addItem(f"{subject.name} ({subject.class_noun})", subject.id)
        if any(g.subject_id is None for g in galleries.list_galleries(self.library)):
            self.subject.addItem("No subject (base model only)", NO_SUBJECT)
        index = self.subject.findData(keep_subject)
        if index < 0:  # the subject with the newest gallery, else the first
            newest = galleries.list_galleries(self.library)
            index = self.subject.findData(newest[0].subject_id if newest and newest[0].subject_id else None)
        self.subject.setCurrentIndex(max(index, 0))
        self.subject.blockSignals(False)
        self._fill_galleries(keep_gallery)

    def _on_subject_changed(self, _index: int) -> None:
        self._fill_galleries(None)

    def _subject_galleries(self) -> list[galleries.Gallery]:
        subject_id = self.subject.currentData()
        if subject_id is None:
            return []
        if subject_id == NO_SUBJECT:
            return [g for g in galleries.list_galleries(self.library) if g.subject_id is None]
        return galleries.list_galleries(self.library, subject_id)

    def _fill_galleries(self, select_id: int | None) -> None:
        stored = self._subject_galleries()
        self.gallery_box.blockSignals(True)
        self.gallery_box.clear()
        for gallery in stored:
            scored = " · scored" if galleries.evaluation_of(self.library, gallery.id) else ""
            self.gallery_box.addItem(f"#{gallery.id} · {gallery.created_at[:16]}{scored}", gallery.id)
            self.gallery_box.setItemData(self.gallery_box.count() - 1, gallery.title, Qt.ToolTipRole)
        index = self.gallery_box.findData(select_id)
        self.gallery_box.setCurrentIndex(index if index >= 0 else 0)
        self.gallery_box.setEnabled(bool(stored))
        self.gallery_box.blockSignals(False)
        self._on_gallery_changed()

    def select_gallery(self, gallery_id: int) -> bool:
        """Show a gallery (from the Generate page's Evaluate… button): its subject, it, its scores."""
        try:
            gallery = galleries.get_gallery(self.library, gallery_id)
        except LibraryError as exc:
            self.show_status(str(exc), error=True)
            return False
        self.refresh(subject_id=gallery.subject_id if gallery.subject_id is not None else NO_SUBJECT,
                     gallery_id=gallery_id)
        return self.gallery is not None and self.gallery.id == gallery_id

    def _on_gallery_changed(self, *_args) -> None:
        gallery_id = self.gallery_box.currentData()
        self.gallery, self.manifest = None, None
        if gallery_id is not None:
            try:
                self.gallery = galleries.get_gallery(self.library, gallery_id)
                self.manifest = self.gallery.manifest()
            except LibraryError as exc:
                self.show_status(f"Could not read the gallery: {exc}", error=True)
        self._show_gallery_info()
        self._update_inputs()
        evaluation = None
        if self.gallery is not None:
            evaluation = galleries.evaluation_of(self.library, self.gallery.id)
            if evaluation is None and self.gallery.evaluation_path.is_file():
                try:  # scored outside the app (``s2s evaluate``): show it, keep it on the next Evaluate
                    evaluation = json.loads(self.gallery.evaluation_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    evaluation = None
        self.show_evaluation(evaluation)

    def _show_gallery_info(self) -> None:
        manifest = self.manifest
        if self.gallery is None or manifest is None:
            text = ("No galleries yet: make one in <b>Generate → Compare</b> (the base model and the subject's "
                    "runs on the same prompts and seeds), then score it here." if self.gallery_box.count() == 0
                    else "")
            set_text(self.gallery_info, text)
            return
        columns = [c.get("label") or c["key"] for c in manifest.get("columns", [])]
        images = manifest.get("images", [])
        settings = manifest.get("settings", {})
        partial = "" if manifest.get("complete", True) else " <i>(stopped early: partial)</i>"
        text = (f"{len(images)} images{partial}: {len(manifest.get('prompts', []))} prompts × "
                f"{len(manifest.get('seeds', []))} seeds, {settings.get('steps', '?')} steps, "
                f"{settings.get('width', '?')} px, {html.escape(str(settings.get('model', '')))}<br>"
                f"Columns: {html.escape(', '.join(columns))}")
        set_text(self.gallery_info, text)

    def real_images(self) -> list[str]:
        subject = self.current_subject()
        if subject is None:
            return []
        return [str(record.path) for record in self.library.images(subject.id)][:MAX_REAL_IMAGES]

    def _update_inputs(self) -> None:
        self._show_features()
        subject = self.current_subject()
        photos = len(self.real_images()) if subject is not None else 0
        needs = "CLIP-I, DINO, PRES and FID compare against the subject's photos"
        if subject is None:
            text = f"No subject: {needs}, so they will be unavailable."
        elif photos == 0:
            text = f"{html.escape(subject.name)} has no photos: {needs}; add some on the Library page."
        else:
            text = f"Real images: the {photos} photos of <b>{html.escape(subject.name)}</b>."
        toy = self.toy_subject()
        if toy:
            text += f"<br>Toy scores: on ({html.escape(toy)} is a toy-world subject)."
        set_text(self.real_info, text)
        for name, box in self.metric_boxes.items():
            if METRICS[name]["model"] == "toy":
                set_enabled(box, bool(toy))
                box.setToolTip(METRICS[name]["note"] if toy else
                               "Only for the toy-world demo subjects (Dotty, Stripe, Smiley) on the toy model")
        set_enabled(self.evaluate_button, self.gallery is not None and self.current_job is None)

    # ------------------------------------------------------------------ feature models
    def edit_feature_models(self) -> FeatureModelsDialog:
        dialog = FeatureModelsDialog(self.settings, self)
        dialog.accepted.connect(self._show_features)
        dialog.open()
        return dialog

    def _show_features(self) -> None:
        set_text(self.features_label, f"<small>{feature_summary(self.feature_sources())}</small>")

    # ------------------------------------------------------------------ running
    def chosen_metrics(self) -> list[str]:
        return [name for name, box in self.metric_boxes.items() if box.isChecked() and box.isEnabled()]

    def params(self) -> tuple[dict | None, str]:
        if self.gallery is None:
            return None, "Choose a gallery (make one in Generate → Compare)."
        metrics = self.chosen_metrics()
        if not metrics:
            return None, "Tick at least one metric."
        params = {
            "gallery": str(self.gallery.folder),
            "real_images": self.real_images() or None,
            "metrics": metrics,
            "feature_models": self.feature_sources() or None,
            "toy_subject": self.toy_subject(),
        }
        params = {k: v for k, v in params.items() if v is not None}
        try:
            protocol.validate_job("evaluate", params)
        except protocol.ProtocolError as exc:
            return None, exc.message + (f" — {exc.hint}" if exc.hint else "")
        return params, ""

    @asyncSlot()
    async def on_evaluate(self) -> None:
        if self.current_job is not None or self._early.submitting:
            return
        params, problem = self.params()
        if params is None:
            self.show_status(problem, error=True)
            return
        self.job_gallery_id = self.gallery.id
        set_enabled(self.evaluate_button, False)
        set_progress(self.progress, 0, 1)
        self.show_status("Queued…")
        try:
            job = await self._early.submit(params, label=f"Evaluate gallery #{self.gallery.id}")
        except Exception as exc:
            set_enabled(self.evaluate_button, True)
            self.show_status(f"Could not start: {exc}", error=True)
            return
        self.current_job = job
        set_enabled(self.cancel_button, True)
        for message in self._early.release(job):
            self.on_event(message)

    def on_cancel(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)
            self.show_status("Cancelling…")

    def on_event(self, message: dict) -> None:
        job = message.get("job")
        if job is None or job != self.current_job:
            self._early.hold(message)  # events can come before submit() returns
            return
        name = message.get("event")
        if name == "started":
            self.show_status("Scoring…")
        elif name == "progress":
            step, total = int(message.get("step") or 0), int(message.get("total") or 0)
            set_progress(self.progress, step, total or 1)
            metric, column = message.get("metric"), message.get("column")
            text = f"Scored {step} of {total}" if total else "Scoring"
            if metric:
                text += f" · {METRICS.get(metric, {}).get('title', metric)}" + (f" of {column}" if column else "")
            eta = message.get("eta_s")
            set_text(self.status, text + (f" · about {eta:.0f} s left" if eta else ""))
        elif name in protocol.TERMINAL_EVENTS:
            self._on_end(name, message)

    def _on_end(self, name: str, message: dict) -> None:
        self.current_job = None
        set_enabled(self.cancel_button, False)
        gallery_id, self.job_gallery_id = self.job_gallery_id, None
        if name == "finished":
            set_progress(self.progress, 1, 1)
            evaluation = self._result_evaluation(message.get("result") or {})
            try:
                galleries.record_evaluation(self.library, gallery_id, evaluation)
            except (LibraryError, OSError, KeyError) as exc:
                self.show_status(f"Scored, but not kept in the library: {exc}", error=True)
                if self.gallery is not None and self.gallery.id == gallery_id:
                    self.show_evaluation(evaluation)
            else:
                seconds = (message.get("result") or {}).get("seconds")
                took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
                self.show_status(f"Scored {len(evaluation.get('rows', []))} columns{took}.")
                self.refresh(gallery_id=gallery_id)  # shows the stored scores
        elif name == "cancelled":
            set_progress(self.progress, 0, 1)
            self.show_status("Cancelled: the earlier scores (if any) are still shown.")
        else:
            error = message.get("error") or {}
            hint = error.get("hint")
            self.show_status(f"The evaluation failed: {error.get('message')}" + (f"\n{hint}" if hint else ""),
                             error=True)
        self._update_inputs()

    def _result_evaluation(self, result: dict) -> dict:
        """The job's result is the evaluation.json layout; if it only names the file, read that."""
        if "rows" in result:
            return result
        path = result.get("file") or result.get("evaluation") or (self.gallery.evaluation_path if self.gallery else "")
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            return {"rows": [], "metrics": [], "best": None}

    # ------------------------------------------------------------------ results
    def show_evaluation(self, evaluation: dict | None) -> None:
        self.evaluation = evaluation if evaluation and evaluation.get("rows") else None
        has = self.evaluation is not None
        self.table.set_evaluation(self.evaluation)
        self.table.setVisible(has)
        self.empty.setVisible(not has)
        if not has:
            set_text(self.empty, "Not scored yet: press <b>Evaluate</b>." if self.gallery is not None else
                     "Pick a gallery to see its scores.")
        best = (self.evaluation or {}).get("best") or {}
        label = next((r.get("label") or r["column"] for r in (self.evaluation or {}).get("rows", [])
                      if r.get("column") == best.get("column")), best.get("column"))
        if has and label:
            set_text(self.best, f"{BEST_MARK} Recommended: <b>{html.escape(str(label))}</b>"
                                + (f" — {html.escape(str(best.get('reason')))}" if best.get("reason") else ""))
        self.best.setVisible(bool(has and label))
        set_text(self.notes, notes_text(self.evaluation))
        self.notes.setVisible(has)
        when = (self.evaluation or {}).get("created_at")
        title = f"<b>Scores of gallery #{self.gallery.id}</b>" if self.gallery else "<b>Scores</b>"
        set_text(self.title, title + (f" · {html.escape(when)}" if when and has else ""))
        for kind, button in self.export_buttons.items():
            set_enabled(button, self.gallery is not None and (has or kind == "grid"))
        set_enabled(self.folder_button, self.gallery is not None)

    # ------------------------------------------------------------------ exports
    def choose_export(self, kind: str) -> None:
        if self.gallery is None:
            return
        suffix, filter_text = {
            "csv": (".csv", "CSV (*.csv)"), "markdown": (".md", "Markdown (*.md)"),
            "html": (".html", "HTML page (*.html)"), "grid": (".png", "PNG image (*.png)"),
        }[kind]
        stem = "grid" if kind == "grid" else "evaluation"
        default = str(Path.home() / f"gallery-{self.gallery.id}-{stem}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, "Export", default, filter_text)
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> Path | None:
        """Write one export through s2s_desktop.reports; the written path, or None (the status says why)."""
        suffix = {"csv": ".csv", "markdown": ".md", "html": ".html", "grid": ".png"}[kind]
        path = Path(path)
        path = path if path.suffix else path.with_suffix(suffix)
        try:
            from s2s_desktop import reports

            if kind == "csv":
                written = reports.evaluation_csv(self.evaluation, path)
            elif kind == "markdown":
                app_settings.atomic_write_text(path, reports.evaluation_markdown(self.evaluation))
                written = path
            elif kind == "html":
                written = reports.html_report(self.gallery.folder, self.evaluation, path)
            else:
                written = reports.grid_png(self.gallery.folder, path)
        except Exception as exc:  # a missing image, a full disk, a folder without write access …
            self.show_status(f"Could not export: {exc}", error=True)
            return None
        self.show_status(f"Exported to {written}.")
        return Path(written)

    def open_folder(self) -> None:
        if self.gallery is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.gallery.folder)))

    def show_status(self, text: str, error: bool = False) -> None:
        style = ERROR_STYLE if error else ""
        if self.status.styleSheet() != style:
            self.status.setStyleSheet(style)
        set_text(self.status, text)

    def shutdown(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)
        self.insertion.shutdown()
