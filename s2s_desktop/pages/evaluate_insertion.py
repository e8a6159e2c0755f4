"""The Evaluate page's "Putting the subject in": each chosen run puts the subject into the same source
pictures (the Edit page's insertion, run by the ``evaluate_insertion`` job), scored in the same
sortable table as a gallery (:class:`EvaluationTable`) with sample counts and "not available" reasons.

Left: the subject, its finished runs (ticked ones are compared), the source pictures (prompts ×
seeds, or a folder of pictures that are inverted), the word the subject takes the place of, and
Evaluate / Cancel. Right: the table, its notes and the exports. The subject's latest result comes
back when it is picked again (it is kept in the subject's folder).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from engine.protocol.insertion import INSERTION_METRICS, INSERTION_NAME
from engine.protocol.training import METHOD_TITLES
from s2s_desktop import insertion_eval
from s2s_desktop.library import Library, LibraryError, Subject, galleries
from s2s_desktop.library import runs as library_runs
from s2s_desktop.pages.early_events import EarlyEvents
from s2s_desktop.widgets.evaluation_table import EvaluationTable, notes_text
from s2s_desktop.widgets.setters import set_enabled, set_progress, set_text

ERROR_STYLE = "color: #a93226;"
NOTES_STYLE = "QLabel { background: palette(alternate-base); border: 1px solid palette(mid); padding: 6px; }"
KIND = "evaluate_insertion"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class InsertionPanel(QWidget):
    def __init__(self, engine, settings, library: Library, parent=None):
        super().__init__(parent)
        self.engine, self.settings, self.library = engine, settings, library
        self.model_info: dict | None = None
        self.current_job: str | None = None
        self.job_folder: Path | None = None
        self.folder: Path | None = None  # of the evaluation shown
        self.evaluation: dict | None = None
        self._early = EarlyEvents(engine, KIND, limit=2000)

        # ---- left: what to measure
        self.subject = QComboBox()
        self.subject.currentIndexChanged.connect(self._on_subject_changed)
        self.runs = QListWidget()
        self.runs.setMaximumHeight(120)
        self.runs.itemChanged.connect(lambda _item: self._update_inputs())
        self.from_seeds = QRadioButton("Generated: each prompt with each seed")
        self.from_folder = QRadioButton("Pictures in a folder (inverted)")
        self.from_seeds.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.from_seeds)
        group.addButton(self.from_folder)
        self.from_seeds.toggled.connect(lambda _on: self._update_inputs())
        self.prompts = QPlainTextEdit()
        self.prompts.setMaximumHeight(90)
        self.prompts.setToolTip("One source prompt per line; each names the word the subject replaces. For a "
                                "folder, the first line says what its pictures show (unless this app made them).")
        self.seeds = QLineEdit("0-3")
        self.picture_folder = QLineEdit()
        self.picture_folder.setPlaceholderText("a folder of PNG, JPEG or WebP pictures")
        browse = QToolButton()
        browse.setText("Folder…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.picture_folder, 1)
        folder_row.addWidget(browse)
        self.into = QLineEdit()
        self.into.setToolTip("The word of the source prompts the subject takes the place of")
        self.steps = QSpinBox()
        self.steps.setRange(2, 500)
        self.steps.setValue(25)
        form = QFormLayout()
        form.addRow("Subject", self.subject)
        form.addRow("Runs", self.runs)
        form.addRow("", self.from_seeds)
        form.addRow("", self.from_folder)
        form.addRow("Prompts", self.prompts)
        form.addRow("Seeds", self.seeds)
        form.addRow("Folder", folder_row)
        form.addRow("Replace", self.into)
        form.addRow("Steps", self.steps)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.evaluate_button = QPushButton("Evaluate putting in")
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
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 8, 0)
        left_layout.addLayout(form)
        left_layout.addWidget(self.info)
        left_layout.addStretch(1)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.status)
        left.setFixedWidth(360)

        # ---- right: the scores
        self.title = QLabel("<b>Putting the subject in</b>")
        self.title.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.table = EvaluationTable()
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet(NOTES_STYLE)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.empty = QLabel()
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignCenter)
        self.export_buttons: dict[str, QPushButton] = {}
        exports = QHBoxLayout()
        exports.addWidget(QLabel("Export"))
        for kind, text in (("csv", "CSV…"), ("markdown", "Markdown…"), ("html", "HTML report…")):
            button = QPushButton(text)
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
        right_layout.addWidget(self.summary)
        right_layout.addWidget(self.table, 10)
        right_layout.addWidget(self.empty, 1)
        right_layout.addWidget(self.notes)
        right_layout.addWidget(QWidget(), 1)
        right_layout.addLayout(exports)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(left)
        layout.addWidget(right, 1)
        engine.event.connect(self.on_event)
        self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802  (runs are trained on the Train page)
        if self.current_job is None:
            self.refresh()
        super().showEvent(event)

    # ------------------------------------------------------------------ inputs
    def set_model_info(self, info: dict | None) -> None:
        self.model_info = info
        self._update_inputs()

    def model_source(self) -> str:
        """The loaded model's location (what the edits run on), else the active model's."""
        location = (self.model_info or {}).get("location")
        return location or (self.settings.active.source if self.settings.active else "")

    def current_subject(self) -> Subject | None:
        try:
            return self.library.subject(self.subject.currentData()) if self.subject.currentData() else None
        except LibraryError:
            return None

    def refresh(self) -> None:
        keep = self.subject.currentData()
        self.subject.blockSignals(True)
        self.subject.clear()
        for subject in self.library.subjects():
            self.subject.addItem(f"{subject.name} ({subject.class_noun})", subject.id)
        self.subject.setCurrentIndex(max(self.subject.findData(keep), 0))
        self.subject.blockSignals(False)
        self._on_subject_changed(keep_prompts=keep == self.subject.currentData())

    def _on_subject_changed(self, *_args, keep_prompts: bool = False) -> None:
        subject = self.current_subject()
        ticked = set(self.chosen_runs()) if keep_prompts else set()
        self.runs.blockSignals(True)
        self.runs.clear()
        for run in library_runs.runs_of(self.library, subject.id) if subject else []:
            if not (run.exports_dir / "run_config.json").is_file():
                continue  # unfinished: nothing to put in yet
            item = QListWidgetItem(f"#{run.id} {METHOD_TITLES.get(run.method, run.method)}")
            item.setData(Qt.UserRole, run.id)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if not ticked or run.id in ticked else Qt.Unchecked)
            self.runs.addItem(item)
        self.runs.blockSignals(False)
        if subject is not None and not (keep_prompts and self.prompts.toPlainText().strip()):
            self.prompts.setPlainText("\n".join(insertion_eval.default_prompts(subject, self.model_source())))
            self.into.setPlaceholderText(f"default: {subject.class_noun}")
        latest = insertion_eval.latest(self.library, subject) if subject else None
        if self.current_job is None:
            self.show_evaluation(*(latest or (None, None)))
        self._update_inputs()

    def chosen_runs(self) -> list[int]:
        return [self.runs.item(i).data(Qt.UserRole) for i in range(self.runs.count())
                if self.runs.item(i).checkState() == Qt.Checked]

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Pictures to put the subject into", str(Path.home()))
        if path:
            self.picture_folder.setText(path)
            self.from_folder.setChecked(True)

    def _update_inputs(self) -> None:
        subject = self.current_subject()
        from_seeds = self.from_seeds.isChecked()
        set_enabled(self.seeds, from_seeds)
        set_enabled(self.picture_folder, not from_seeds)
        toy = galleries.toy_subject_for(subject, self.model_source())
        if subject is None:
            text = "Add a subject on the Library page and train it first."
        elif self.runs.count() == 0:
            text = f"{html.escape(subject.name)} has no finished runs yet: train one on the Train page."
        else:
            text = (f"Each ticked run puts <b>{html.escape(subject.name)}</b> into every source picture (the run on "
                    "the edited picture only), then the table scores the runs side by side.")
            if toy:
                text += f"<br>Toy scores: on ({html.escape(toy)} is a toy-world subject)."
        set_text(self.info, text)
        set_enabled(self.evaluate_button, self.current_job is None and bool(self.chosen_runs()))

    # ------------------------------------------------------------------ running
    def params(self) -> tuple[dict | None, str]:
        subject = self.current_subject()
        if subject is None:
            return None, "Choose a subject."
        source = self.model_source()
        prompts = [line.strip() for line in self.prompts.toPlainText().splitlines() if line.strip()]
        try:
            columns = insertion_eval.run_columns(self.library, subject, self.chosen_runs())
            if self.from_seeds.isChecked():
                try:
                    seeds = galleries.parse_seeds(self.seeds.text() or "0")
                except LibraryError as exc:
                    return None, str(exc)
                sources = insertion_eval.seed_sources(prompts, seeds)
            else:
                sources = insertion_eval.folder_sources(self.picture_folder.text(), prompts[0] if prompts else "")
            params = insertion_eval.job_params(
                subject=subject, columns=columns, sources=sources, out_dir=insertion_eval.new_folder(self.library, subject),
                into=self.into.text().strip(), real_images=[str(r.path) for r in self.library.images(subject.id)],
                feature_models=galleries.feature_sources_for(self.settings.feature_models.sources(), source),
                toy_subject=galleries.toy_subject_for(subject, source), steps=self.steps.value())
        except (insertion_eval.InsertionSetupError, LibraryError) as exc:
            return None, str(exc)
        return params, ""

    @asyncSlot()
    async def on_evaluate(self) -> None:
        if self.current_job is not None or self._early.submitting:
            return
        params, problem = self.params()
        if params is None:
            self.show_status(problem, error=True)
            return
        self.job_folder = Path(params["out_dir"])
        set_enabled(self.evaluate_button, False)
        set_progress(self.progress, 0, 1)
        self.show_status(f"Queued: {len(params['runs'])} run(s) × {len(params['sources'])} picture(s)…")
        try:
            job = await self._early.submit(params, label=f"Putting {self.current_subject().name} in")
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
            self.show_status("Cancelling: the edits made so far are scored…")

    def on_event(self, message: dict) -> None:
        job = message.get("job")
        if job is None or job != self.current_job:
            self._early.hold(message)
            return
        name = message.get("event")
        if name == "progress":
            step, total = int(message.get("step") or 0), int(message.get("total") or 0)
            set_progress(self.progress, step, total or 1)
            if message.get("phase") == "scoring":
                metric = INSERTION_METRICS.get(message.get("metric"), {}).get("title", message.get("metric"))
                text = f"Scoring {metric} of {message.get('column')}"
            else:
                text = f"Putting in with {message.get('run')}: picture {int(message.get('source') or 0) + 1}"
            eta = message.get("eta_s")
            set_text(self.status, text + (f" · about {eta:.0f} s left" if eta else ""))
        elif name in protocol.TERMINAL_EVENTS:
            self._on_end(name, message)

    def _on_end(self, name: str, message: dict) -> None:
        self.current_job = None
        set_enabled(self.cancel_button, False)
        folder, self.job_folder = self.job_folder, None
        if name == "finished":
            set_progress(self.progress, 1, 1)
            result = message.get("result") or {}
            self.show_evaluation(folder, result)
            took = f" in {result['seconds']:.1f} s" if isinstance(result.get("seconds"), (int, float)) else ""
            self.show_status(f"Scored {len(result.get('rows', []))} run(s){took}.")
        elif name == "cancelled":
            set_progress(self.progress, 0, 1)
            partial = _read(folder / INSERTION_NAME) if folder else None
            if partial:
                self.show_evaluation(folder, partial)
                made = sum(len(r.get("edits", [])) for r in partial.get("rows", []))
                self.show_status(f"Cancelled: the scores cover the {made} edits made.")
            else:
                self.show_status("Cancelled before any picture was edited.")
        else:
            error = message.get("error") or {}
            hint = error.get("hint")
            self.show_status(f"The insertion evaluation failed: {error.get('message')}" + (f"\n{hint}" if hint else ""),
                             error=True)
        self._update_inputs()

    # ------------------------------------------------------------------ results
    def show_evaluation(self, folder: Path | None, evaluation: dict | None) -> None:
        self.folder = Path(folder) if folder else None
        self.evaluation = evaluation if evaluation and evaluation.get("rows") else None
        has = self.evaluation is not None
        self.table.set_evaluation(self.evaluation)
        self.table.setVisible(has)
        self.empty.setVisible(not has)
        set_text(self.empty, "" if has else "Not measured yet: tick the runs and press <b>Evaluate putting in</b>.")
        if has:
            from s2s_desktop.reports import insertion_summary

            partial = "" if self.evaluation.get("complete", True) else " <i>(cancelled: partial)</i>"
            set_text(self.summary, html.escape(insertion_summary(self.evaluation)) + partial)
        else:
            set_text(self.summary, "")
        set_text(self.notes, notes_text(self.evaluation))
        self.notes.setVisible(has)
        for button in self.export_buttons.values():
            set_enabled(button, has)
        set_enabled(self.folder_button, self.folder is not None)

    def choose_export(self, kind: str) -> None:
        suffix, filter_text = {"csv": (".csv", "CSV (*.csv)"), "markdown": (".md", "Markdown (*.md)"),
                               "html": (".html", "HTML page (*.html)")}[kind]
        default = str(Path.home() / f"insertion{'-report' if kind == 'html' else ''}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, "Export", default, filter_text)
        if path:
            self.export(kind, path)

    def export(self, kind: str, path: str | Path) -> Path | None:
        """One export through s2s_desktop.reports; the written path, or None (the status says why)."""
        from s2s_desktop import reports
        from s2s_desktop.settings import atomic_write_text

        path = Path(path)
        path = path if path.suffix else path.with_suffix({"csv": ".csv", "markdown": ".md", "html": ".html"}[kind])
        try:
            if kind == "csv":
                reports.evaluation_csv(self.evaluation, path)
            elif kind == "markdown":
                atomic_write_text(path, reports.insertion_markdown(self.evaluation))
            else:
                reports.insertion_html(self.folder, self.evaluation, path)
        except Exception as exc:  # a missing picture, a full disk, a folder without write access …
            self.show_status(f"Could not export: {exc}", error=True)
            return None
        self.show_status(f"Exported to {path}.")
        return path

    def open_folder(self) -> None:
        if self.folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder)))

    def show_status(self, text: str, error: bool = False) -> None:
        style = ERROR_STYLE if error else ""
        if self.status.styleSheet() != style:
            self.status.setStyleSheet(style)
        set_text(self.status, text)

    def shutdown(self) -> None:
        if self.current_job:
            self.engine.cancel(self.current_job)

