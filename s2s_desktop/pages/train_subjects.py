"""The left column of the Train page: which subject to train, and the runs it already has."""

from __future__ import annotations

import html
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.library import Library, LibraryError, Subject
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.runs import Run
from s2s_desktop.pages.train_runs import METHOD_SHORT, LiveRun, run_status_text
from s2s_desktop.widgets.setters import set_text, set_tooltip


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class SubjectRuns(QWidget):
    subject_changed = Signal()
    run_selected = Signal()

    def __init__(self, library: Library, live_run: Callable[[int], LiveRun | None], parent=None):
        super().__init__(parent)
        self.library = library
        self.live_run = live_run
        self.subject_box = QComboBox()
        self.subject_box.currentIndexChanged.connect(lambda *_: self._on_subject_changed())
        self.subject_info = QLabel()
        self.subject_info.setWordWrap(True)
        self.run_list = QListWidget()
        self.run_list.setWordWrap(True)
        self.run_list.currentItemChanged.connect(lambda *_: self.run_selected.emit())
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Go on from the run's last checkpoint")
        self.folder_button = QPushButton("Open folder")
        self.folder_button.setToolTip("The run's samples, checkpoints and exports")
        self.try_button = QPushButton("Try in a picture…")
        self.try_button.setToolTip("Open the Edit page with this run chosen and pick a picture to put the "
                                   "subject into")
        buttons = QHBoxLayout()
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.folder_button)
        self.setFixedWidth(250)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(QLabel("<b>Subject</b>"))
        column.addWidget(self.subject_box)
        column.addWidget(self.subject_info)
        column.addSpacing(6)
        column.addWidget(QLabel("<b>Runs</b>"))
        column.addWidget(self.run_list, 1)
        column.addLayout(buttons)
        column.addWidget(self.try_button)

    # ------------------------------------------------------------------ subjects
    def current_subject(self) -> Subject | None:
        subject_id = self.subject_box.currentData()
        try:
            return None if subject_id is None else self.library.subject(subject_id)
        except LibraryError:
            return None

    def refresh_subjects(self, select_id: int | None = None) -> int:
        """Reload the subjects (keeping the choice); returns how many there are."""
        keep = select_id if select_id is not None else self.subject_box.currentData()
        subjects = self.library.subjects()
        self.subject_box.blockSignals(True)
        self.subject_box.clear()
        for subject in subjects:
            self.subject_box.addItem(subject.name, subject.id)
        ids = [s.id for s in subjects]
        self.subject_box.setCurrentIndex(ids.index(keep) if keep in ids else 0 if ids else -1)
        self.subject_box.blockSignals(False)
        self._on_subject_changed()
        return len(subjects)

    def _on_subject_changed(self) -> None:
        subject = self.current_subject()
        if subject is None:
            self.subject_info.setText("")
        else:
            self.subject_info.setText(f"{plural(subject.image_count, 'photo')} · a {html.escape(subject.class_noun)}, "
                                      f"written <b>{html.escape(subject.token)}</b> in prompts")
        self.refresh_runs()
        self.subject_changed.emit()

    # ------------------------------------------------------------------ runs
    def refresh_runs(self, select_id: int | None = None) -> None:
        subject = self.current_subject()
        current = self.run_list.currentItem()
        keep = select_id if select_id is not None else current.data(Qt.UserRole) if current else None
        runs = library_runs.runs_of(self.library, subject.id) if subject else []
        self.run_list.blockSignals(True)
        self.run_list.clear()
        for run in runs:
            item = QListWidgetItem()
            item.setData(Qt.UserRole, run.id)
            self.fill_item(item, run)
            self.run_list.addItem(item)
        if not runs:
            hint = QListWidgetItem("No runs yet: choose a method\nand press Train.")
            hint.setFlags(Qt.NoItemFlags)
            hint.setData(Qt.UserRole, 0)  # run ids start at 1
            self.run_list.addItem(hint)
        ids = [r.id for r in runs]
        self.run_list.setCurrentRow(ids.index(keep) if keep in ids else 0 if ids else -1)
        self.run_list.blockSignals(False)
        self.run_selected.emit()

    def fill_item(self, item: QListWidgetItem, run: Run) -> None:
        live = self.live_run(run.id)
        step = live.step if live and live.active else run.step
        set_text(item, f"#{run.id} {METHOD_SHORT.get(run.method, run.method)} · {run_status_text(run, live)}\n"
                       f"{step}/{run.total_steps} steps · {run.created_at[:16]}")
        set_tooltip(item, run.error or str(run.folder))

    def update_run(self, run: Run) -> None:
        for row in range(self.run_list.count()):
            item = self.run_list.item(row)
            if item.data(Qt.UserRole) == run.id:
                self.fill_item(item, run)
                return

    def selected_run(self) -> Run | None:
        item = self.run_list.currentItem()
        run_id = None if item is None else item.data(Qt.UserRole)
        try:
            return library_runs.get_run(self.library, run_id) if run_id else None
        except LibraryError:
            return None


def empty_train_view(go_button) -> QWidget:
    """What the Train page shows before any subject has photos."""
    view = QWidget()
    body = QLabel("<h2>Nothing to train yet</h2>Training teaches the model a subject from its photos. "
                  "Create a subject in the Library and add 5–20 photos of it (or add the demo subjects), "
                  "then come back here.")
    body.setWordWrap(True)
    body.setFixedWidth(520)
    body.setMinimumHeight(body.heightForWidth(520))
    layout = QVBoxLayout(view)
    layout.addStretch(1)
    layout.addWidget(body, 0, Qt.AlignHCenter)
    layout.addWidget(go_button, 0, Qt.AlignHCenter)
    layout.addStretch(2)
    return view
