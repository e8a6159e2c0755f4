"""Library page: subjects on the left, the selected one on the right (:class:`SubjectView`).

Files dropped anywhere on the page are imported into the selected subject (or the subject they are
dropped on; with none, the user names one first). Imports and thumbnails run on worker threads
(:class:`LibraryWorkers`), so the grid fills while files are still being read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from s2s_desktop import settings as app_settings
from s2s_desktop.library import Library, LibraryError, Subject
from s2s_desktop.library.demo_subjects import demo_render_dir, import_demo_subjects, remove_renders
from s2s_desktop.library.tokens import read_vocabulary
from s2s_desktop.pages.library_workers import ImportBatch, LibraryWorkers
from s2s_desktop.pages.subject_view import SubjectView, plural
from s2s_desktop.widgets.library_panels import summary
from s2s_desktop.widgets.subject_dialog import NewSubjectDialog, sentence

COVER = 48
DEMO_PHOTOS = 8
DEMO_TIP = "Three toy-world subjects (Dotty, Stripe, Smiley) with rendered photos, to try things out"


class LibraryPage(QWidget):
    try_run = Signal(int)  # a finished run's "Try in a picture…" (run id): the Edit page

    def __init__(self, engine, settings: app_settings.Settings, library: Library | None = None, parent=None):
        super().__init__(parent)
        self.engine = engine
        self.settings = settings
        if library is None:
            from s2s_desktop.library import consistency

            library = Library()
            consistency.recover(library)  # what an interrupted import or gallery left behind
        self.library = library
        self.workers = LibraryWorkers(self.library, self)
        self.demo_count = DEMO_PHOTOS
        self._demo_job: str | None = None
        self._job_waiters: dict[str, asyncio.Future] = {}
        self.setAcceptDrops(True)

        # ---- left: subjects
        self.subject_list = QListWidget()
        self.subject_list.setIconSize(QSize(COVER, COVER))
        self.subject_list.setSpacing(2)
        self.subject_list.setTextElideMode(Qt.ElideRight)  # long names end in "…"; the tooltip has them
        self.subject_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.subject_list.currentItemChanged.connect(lambda *_: self._show_current())
        self.new_button = self._button("New subject…", self.new_subject)
        self.demo_button = self._button("Add demo subjects", self.add_demo_subjects, DEMO_TIP)
        left = QWidget()
        left.setFixedWidth(240)
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(QLabel("<b>Subjects</b>"))
        column.addWidget(self.subject_list, 1)
        column.addWidget(self.new_button)
        column.addWidget(self.demo_button)

        # ---- right: the selected subject
        self.view = SubjectView(self.library, self.workers, settings.library.min_short_side, self.vocabulary)
        self.view.files_chosen.connect(self.import_paths)
        self.view.subject_changed.connect(self._on_subject_changed)
        self.view.subject_deleted.connect(lambda _: self.refresh_subjects())
        self.view.status.connect(self.show_status)
        self.view.try_run.connect(self.try_run)
        self.main_view = QWidget()
        row = QHBoxLayout(self.main_view)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(left)
        row.addWidget(self.view, 1)
        self.views = QStackedWidget()
        self.views.addWidget(self._build_empty_view())
        self.views.addWidget(self.main_view)
        for widget in (self.view.grid, self.subject_list):  # item views take drops themselves: filter them
            widget.viewport().setAcceptDrops(True)
            widget.viewport().installEventFilter(self)

        # ---- bottom: progress of imports and of the demo job, then the last outcome
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.hide()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.stop_button = self._button("Stop", self.workers.stop_imports, "Stop after the current file; added photos stay")
        self.stop_button.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self.progress)
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.views, 1)
        layout.addLayout(status_row)

        self.workers.import_progress.connect(self._on_import_progress)
        self.workers.import_finished.connect(self._on_import_finished)
        self.workers.cover_ready.connect(self._on_cover_ready)
        engine.event.connect(self._on_engine_event)
        self.refresh_subjects()

    def _button(self, text: str, slot, tooltip: str = "") -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(slot)
        button.setToolTip(tooltip)
        return button

    def _build_empty_view(self) -> QWidget:
        self.empty_view = QWidget()
        heading = QLabel("<h2>Your subject library is empty</h2>")
        body = QLabel(
            "A subject is someone or something you want the model to learn: your dog, a favourite mug, "
            "yourself. Create one, then drop 5–20 photos of it onto this page — different angles, places "
            "and light work best. Every photo is checked, and you will see which were refused and why."
            "<br><br>No photos at hand? Add the demo subjects: three toy-world objects with rendered photos."
        )
        body.setWordWrap(True)
        body.setFixedWidth(560)
        body.setMinimumHeight(body.heightForWidth(560))  # an aligned label gets no height-for-width: it clipped
        self.empty_new_button = self._button("New subject…", self.new_subject)
        self.empty_demo_button = self._button("Add demo subjects", self.add_demo_subjects, DEMO_TIP)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.empty_new_button)
        buttons.addWidget(self.empty_demo_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self.empty_view)
        layout.addStretch(1)
        layout.addWidget(heading, 0, Qt.AlignHCenter)
        layout.addWidget(body, 0, Qt.AlignHCenter)
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(2)
        return self.empty_view

    # ------------------------------------------------------------------ subjects
    def current_subject_id(self) -> int | None:
        item = self.subject_list.currentItem()
        return None if item is None else item.data(Qt.UserRole)

    def current_subject(self) -> Subject | None:
        subject_id = self.current_subject_id()
        try:
            return None if subject_id is None else self.library.subject(subject_id)
        except LibraryError:
            return None

    def refresh_subjects(self, select_id: int | None = None) -> None:
        keep = select_id if select_id is not None else self.current_subject_id()
        subjects = self.library.subjects()
        self.subject_list.blockSignals(True)  # one show_subject at the end, not one per row
        self.subject_list.clear()
        for subject in subjects:
            item = QListWidgetItem()
            item.setData(Qt.UserRole, subject.id)
            self._fill_subject_item(item, subject)
            self.subject_list.addItem(item)
        ids = [s.id for s in subjects]
        self.subject_list.setCurrentRow(ids.index(keep) if keep in ids else 0 if ids else -1)
        self.subject_list.blockSignals(False)
        self.views.setCurrentWidget(self.main_view if subjects else self.empty_view)
        self._show_current()

    def showEvent(self, event) -> None:  # noqa: N802  (runs finish on the Train page)
        self.view.show_activity()
        super().showEvent(event)

    def _show_current(self) -> None:
        self.view.show_subject(self.current_subject())

    def _fill_subject_item(self, item: QListWidgetItem, subject: Subject) -> None:
        item.setText(f"{subject.name}\n{plural(subject.image_count, 'photo')} · {subject.class_noun}")
        item.setToolTip(f"{subject.name}: a {subject.class_noun}, written {subject.token} in prompts")
        item.setIcon(self.workers.cover_icon(subject.id))

    def _subject_item(self, subject_id: int) -> QListWidgetItem | None:
        for row in range(self.subject_list.count()):
            if self.subject_list.item(row).data(Qt.UserRole) == subject_id:
                return self.subject_list.item(row)
        return None

    def _on_subject_changed(self, subject_id: int) -> None:
        """Name, token, count or cover changed: update its row and header, keep the grid as it is."""
        item = self._subject_item(subject_id)
        try:
            subject = self.library.subject(subject_id)
        except LibraryError:
            self.refresh_subjects()
            return
        if item is None or item.text().split("\n", 1)[0] != subject.name:
            self.refresh_subjects(select_id=self.current_subject_id())  # renamed: the order may change
            return
        self._fill_subject_item(item, subject)
        if subject_id == self.current_subject_id():
            self.view.show_header(subject)

    def _on_cover_ready(self, subject_id: int, icon) -> None:
        item = self._subject_item(subject_id)
        if item is not None:
            item.setIcon(icon)

    def vocabulary(self) -> set[str] | None:
        """The active model's words, so a new token is one it does not know (None: not a local folder)."""
        active = self.settings.active
        if active is None or not Path(active.source).is_dir():
            return None
        return read_vocabulary(active.source)

    def ask_new_subject(self) -> Subject | None:
        dialog = NewSubjectDialog(self.library, self.vocabulary(), self)
        if dialog.exec() != QDialog.Accepted or dialog.subject is None:
            return None
        self.refresh_subjects(select_id=dialog.subject.id)
        return dialog.subject

    def new_subject(self) -> None:
        self.ask_new_subject()

    # ------------------------------------------------------------------ importing
    def import_paths(self, subject_id: int | None, paths) -> ImportBatch | None:
        """Import files and folders into a subject (None: the selected one, or ask for a new one)."""
        try:
            subject = self.library.subject(subject_id) if subject_id is not None else self.current_subject()
        except LibraryError as exc:
            self.show_status(sentence(str(exc)), error=True)
            return None
        subject = subject or self.ask_new_subject()
        if subject is None or not paths:
            return None
        batch = self.workers.start_import(subject, paths, self.settings.library.limits())
        batch.extra["rows"] = self.view.results_panel.start_batch(subject.name, len(batch.paths))
        self._show_import_progress()
        return batch

    def _on_import_progress(self, batch: ImportBatch, result) -> None:
        rows = batch.extra["rows"]
        rows.set_header(f"importing {batch.done}/{batch.total}…")
        rows.add(result)
        if result.imported and batch.subject.id == self.current_subject_id():
            try:
                self.view.add_record(self.library.image(result.image_id))
                self.view.refresh_header()
            except LibraryError:
                pass  # removed again meanwhile
        self._show_import_progress()

    def _on_import_finished(self, batch: ImportBatch, report, error: str) -> None:
        batch.extra["rows"].finish(report, sentence(error))
        if report is None:
            self.show_status(f"The import into {batch.subject.name} stopped: {error}", error=True)
        else:
            self.show_status(f"{batch.subject.name}: {summary(report)}.")
        self._on_subject_changed(batch.subject.id)
        self._show_import_progress()

    def _show_import_progress(self) -> None:
        if not self.workers.batches:
            if self._demo_job is None:
                self.progress.hide()
            self.stop_button.hide()
            return
        batch = next(iter(self.workers.batches.values()))  # the oldest is the one running
        waiting = len(self.workers.batches) - 1
        counted = f" {batch.done}/{batch.total}" if batch.total else ""
        text = f"Importing{counted} into {batch.subject.name}…"
        if waiting:
            text += f" ({plural(waiting, 'more import')} waiting)"
        self._show_busy(text, batch.done, batch.total)
        self.stop_button.show()

    def _show_busy(self, text: str, done: int = 0, total: int = 0) -> None:
        self.progress.setRange(0, total)  # 0..0 is Qt's "busy" animation
        self.progress.setValue(done)
        self.progress.show()
        self.show_status(text)

    def show_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet("color: #a93226;" if error else "")
        self.status_label.setText(text)

    # ------------------------------------------------------------------ drag and drop
    @staticmethod
    def _dropped_paths(event) -> list[Path]:
        mime = event.mimeData()
        return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()] if mime.hasUrls() else []

    def eventFilter(self, watched, event) -> bool:
        kind = event.type()
        if kind in (QEvent.DragEnter, QEvent.DragMove, QEvent.Drop) and self._dropped_paths(event):
            target = None
            if kind == QEvent.Drop and watched is self.subject_list.viewport():  # onto one subject
                item = self.subject_list.itemAt(event.position().toPoint())
                target = None if item is None else item.data(Qt.UserRole)
            self._take_drop(event, target)
            return True
        return super().eventFilter(watched, event)

    def dragEnterEvent(self, event) -> None:
        self._take_drop(event)

    def dragMoveEvent(self, event) -> None:
        self._take_drop(event)

    def dropEvent(self, event) -> None:
        self._take_drop(event)

    def _take_drop(self, event, subject_id: int | None = None) -> None:
        paths = self._dropped_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        if event.type() == QEvent.Drop:
            # Finish the drop first: a dialog inside a drop handler would block the app the files came from.
            QTimer.singleShot(0, lambda: self.import_paths(subject_id, paths))

    # ------------------------------------------------------------------ demo subjects
    @asyncSlot()
    async def add_demo_subjects(self) -> None:
        for button in (self.demo_button, self.empty_demo_button):
            button.setEnabled(False)
        try:
            await self._add_demo_subjects()
        except Exception as exc:
            self.show_status(f"Could not add the demo subjects: {exc}", error=True)
        finally:
            self._demo_job = None
            for button in (self.demo_button, self.empty_demo_button):
                button.setEnabled(True)
            self._show_import_progress()

    async def _add_demo_subjects(self) -> None:
        """The engine renders the photos (the GUI never imports the toy world); they are imported
        like anyone's photos, on the import thread."""
        self._show_busy("Drawing the demo subjects' photos…")
        params = {"out_dir": str(demo_render_dir(self.library.home)), "count": self.demo_count}
        self._demo_job = await self.engine.submit("demo_subjects", params, label="Demo subjects")
        record = await self._wait_for_job(self._demo_job)
        if record.state != "finished":
            error = record.error or {}
            hint = f" — {error['hint']}" if error.get("hint") else ""
            raise RuntimeError(f"{error.get('message') or record.state}{hint}")
        self._show_busy("Adding the demo photos to the library…")
        limits, vocabulary, home = self.settings.library.limits(), self.vocabulary(), self.library.home

        def work():
            reports = import_demo_subjects(self.library, record.result or {}, limits, vocabulary)
            remove_renders(home)  # copied into the library; the render cache is not needed any more
            return reports

        reports = await self.workers.run_after_imports(work)
        for report in reports:
            self.view.results_panel.show_report(report)
        first = self.library.find_subject(reports[0].subject) if reports else None
        self.refresh_subjects(select_id=first.id if first else None)
        added = plural(sum(len(r.imported) for r in reports), "photo")
        self.show_status(f"Added the demo subjects {', '.join(r.subject for r in reports)}: {added}.")

    async def _wait_for_job(self, job_id: str):
        record = self.engine.jobs.get(job_id)
        if record is None or not record.done:  # its end may have arrived before its id did
            waiter = asyncio.get_running_loop().create_future()
            self._job_waiters[job_id] = waiter
            try:
                await waiter
            finally:
                self._job_waiters.pop(job_id, None)
        return self.engine.jobs[job_id]

    def _on_engine_event(self, message: dict) -> None:
        job, name = message.get("job"), message.get("event")
        if job is not None and job == self._demo_job and name == "progress":
            step, total = int(message.get("step", 0)), int(message.get("total") or 0)
            self._show_busy(f"Drawing the demo subjects' photos {step}/{total}…", step, total)
        waiter = self._job_waiters.get(job)
        if name in protocol.TERMINAL_EVENTS and waiter is not None and not waiter.done():
            waiter.set_result(message)

    def shutdown(self) -> None:
        """When the window closes: stop imports after their current file and drop queued work."""
        self.workers.shutdown()
