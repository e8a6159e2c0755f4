"""The right side of the Library page: one subject's header and actions, its photo grid, the import
results, and everything made from it."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.library import ImageRecord, Library, LibraryError, Subject
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.importer import count_warnings
from s2s_desktop.pages.library_workers import LibraryWorkers, thumbnail_key
from s2s_desktop.widgets.crop_editor import CropEditor
from s2s_desktop.widgets.library_panels import ActivityPanel, ImportResultsPanel
from s2s_desktop.widgets.subject_dialog import ask_until_valid, sentence

THUMB = 160  # grid icon size on screen
KEY_ROLE = Qt.UserRole + 1  # which thumbnail (photo + crop) a grid item shows
WARNING_STYLE = (
    "QLabel { background: #fdf3dc; color: #5c4300; border: 1px solid #ecd9a6; border-radius: 4px; padding: 6px; }"
)
MUTED_STYLE = "color: palette(placeholder-text);"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.webp *.tif *.tiff *.bmp *.gif);;All files (*)"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class SubjectView(QWidget):
    files_chosen = Signal(int, list)  # subject id, paths from Add photos… / Add folder…
    subject_changed = Signal(int)  # renamed, new token, photos removed or re-cropped
    subject_deleted = Signal(int)
    status = Signal(str, bool)  # message, is it an error
    try_run = Signal(int)  # a finished run's "Try in a picture…" (run id)

    def __init__(self, library: Library, workers: LibraryWorkers, min_short_side: int,
                 vocabulary: Callable[[], set[str] | None], parent=None):
        super().__init__(parent)
        self.library = library
        self.workers = workers
        self.min_short_side = min_short_side
        self.vocabulary = vocabulary
        self.subject: Subject | None = None
        self.grid_items: dict[int, QListWidgetItem] = {}  # image id → grid item
        self._last_dir = str(Path.home())

        self.name_label = QLabel()
        font = QFont()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.name_label.setFont(font)
        self.details_label = QLabel()
        self.details_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet(WARNING_STYLE)
        self.add_photos_button = self._button("Add photos…", self.add_photos)
        self.add_folder_button = self._button("Add folder…", self.add_folder)
        self.crop_button = self._button("Crop…", lambda: self.open_crop_editor(), "Choose the square training sees")
        self.remove_photo_button = self._button("Remove photo", self.remove_selected_photos)
        self.rename_button = self._button("Rename…", self.rename_subject)
        self.token_button = self._button("Token…", self.edit_token, "The new word for this subject in prompts")
        self.delete_button = self._button("Delete…", self.delete_subject)
        actions = QHBoxLayout()
        for button in (self.add_photos_button, self.add_folder_button, self.crop_button, self.remove_photo_button):
            actions.addWidget(button)
        actions.addStretch(1)
        for button in (self.rename_button, self.token_button, self.delete_button):
            actions.addWidget(button)

        self.grid = QListWidget()
        self.grid.setViewMode(QListWidget.IconMode)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 20, THUMB + 36))
        self.grid.setResizeMode(QListWidget.Adjust)
        self.grid.setMovement(QListWidget.Static)  # also turns off the view's own drag and drop
        self.grid.setUniformItemSizes(True)
        self.grid.setTextElideMode(Qt.ElideMiddle)
        self.grid.setSelectionMode(QListWidget.ExtendedSelection)
        self.grid.itemDoubleClicked.connect(self.open_crop_editor)
        self.grid.itemSelectionChanged.connect(self._update_buttons)
        self.grid_placeholder = QLabel()
        self.grid_placeholder.setAlignment(Qt.AlignCenter)
        self.grid_placeholder.setWordWrap(True)
        self.grid_placeholder.setStyleSheet(f"{MUTED_STYLE} font-size: 15px; padding: 30px;")
        self.grid_stack = QStackedWidget()
        self.grid_stack.addWidget(self.grid_placeholder)
        self.grid_stack.addWidget(self.grid)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.name_label, self.details_label, self.warnings_label):
            top_layout.addWidget(widget)
        top_layout.addLayout(actions)
        top_layout.addWidget(self.grid_stack, 1)
        self.results_panel = ImportResultsPanel()
        self.activity_panel = ActivityPanel()
        self.activity_panel.try_run.connect(self.try_run)
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.results_panel)
        lower.addWidget(self.activity_panel)
        lower.setSizes([600, 320])
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(lower)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([470, 210])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        workers.thumbnail_ready.connect(self._on_thumbnail_ready)
        workers.thumbnail_failed.connect(self._on_thumbnail_failed)
        self._update_buttons()

    def _button(self, text: str, slot, tooltip: str = "") -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(slot)
        button.setToolTip(tooltip)
        return button

    # ------------------------------------------------------------------ showing a subject
    def show_subject(self, subject: Subject | None) -> None:
        self.subject = subject
        self.grid.clear()
        self.grid_items.clear()
        if subject is not None:
            self.show_header(subject)
            for record in self.library.images(subject.id):
                self.add_record(record)
            self.show_activity()
        self._update_buttons()

    def show_activity(self) -> None:
        """What was made from the subject; finished runs (with exports) can be tried in a picture."""
        if self.subject is None:
            return
        finished = {run.id for run in library_runs.runs_of(self.library, self.subject.id)
                    if run.status == "finished" and (run.exports_dir / "run_config.json").is_file()}
        self.activity_panel.show_activity(self.library.activity(self.subject.id), finished)

    def refresh_header(self) -> None:
        if self.subject is not None:
            self.show_header(self.library.subject(self.subject.id))

    def show_header(self, subject: Subject) -> None:
        self.subject = subject
        count = subject.image_count
        self.name_label.setText(subject.name)
        self.details_label.setText(
            f"Class noun <b>{html.escape(subject.class_noun)}</b> · identifier token "
            f"<b>{html.escape(subject.token)}</b> · {plural(count, 'photo')}"
        )
        warnings = count_warnings(count)
        self.warnings_label.setText("<br>".join(f"⚠ {html.escape(sentence(w))}" for w in warnings))
        self.warnings_label.setVisible(bool(warnings))
        self.grid_placeholder.setText(
            f"No photos of {html.escape(subject.name)} yet.<br><br>Drop 5–20 photos or a folder here, or use "
            "<b>Add photos…</b>. Different angles, places and light help; each photo needs at least "
            f"{self.min_short_side} px on its short side."
        )
        self.grid_stack.setCurrentWidget(self.grid if count else self.grid_placeholder)

    def _update_buttons(self) -> None:
        for button in (self.add_photos_button, self.add_folder_button, self.rename_button,
                       self.token_button, self.delete_button):
            button.setEnabled(self.subject is not None)
        selected = bool(self.grid.selectedItems())
        self.crop_button.setEnabled(selected)
        self.remove_photo_button.setEnabled(selected)

    # ------------------------------------------------------------------ the grid
    def add_record(self, record: ImageRecord) -> None:
        """Add one photo (at the end: the grid is in import order), unless it is shown already."""
        if record.id in self.grid_items:
            return
        item = QListWidgetItem(record.source_name)
        item.setData(Qt.UserRole, record.id)
        self.grid_items[record.id] = item
        self.grid.addItem(item)
        self._show_record(item, record)
        self.grid_stack.setCurrentWidget(self.grid)

    def _show_record(self, item: QListWidgetItem, record: ImageRecord) -> None:
        item.setData(KEY_ROLE, thumbnail_key(record))
        item.setToolTip(
            f"{record.source_name}\n{record.width} × {record.height} px, {record.format or 'image'}\n"
            f"Conversions: {record.conversions or 'none'}\nCrop: {record.crop.size} px square at "
            f"({record.crop.x}, {record.crop.y})\nAdded {record.added_at}\nDouble-click to change the crop"
        )
        item.setIcon(self.workers.image_icon(record))

    def _on_thumbnail_ready(self, image_id: int, key: str, icon) -> None:
        item = self.grid_items.get(image_id)
        if item is not None and item.data(KEY_ROLE) == key:  # not re-cropped since it was asked for
            item.setIcon(icon)

    def _on_thumbnail_failed(self, image_id: int, reason: str) -> None:
        item = self.grid_items.get(image_id)
        if item is not None:
            item.setToolTip(f"⚠ This photo cannot be read: {reason}\n\n{item.toolTip()}")

    def open_crop_editor(self, item: QListWidgetItem | None = None) -> CropEditor | None:
        item = item or (self.grid.selectedItems() or [None])[0]
        if item is None:
            return None
        try:
            record = self.library.image(item.data(Qt.UserRole))
        except LibraryError as exc:
            self.status.emit(sentence(str(exc)), True)
            return None
        editor = CropEditor(self.library, record, self)
        editor.setAttribute(Qt.WA_DeleteOnClose)
        editor.saved.connect(self._on_crop_saved)
        editor.open()
        return editor

    def _on_crop_saved(self, record: ImageRecord) -> None:
        item = self.grid_items.get(record.id)
        if item is not None:
            self._show_record(item, record)
        self.subject_changed.emit(record.subject_id)  # the cover is the first photo's crop

    def remove_selected_photos(self) -> None:
        items = self.grid.selectedItems()
        if not items or self.subject is None:
            return
        text = (
            f"Remove {plural(len(items), 'photo')} from {self.subject.name}?\n\nThe library's copies are "
            "deleted; the original files elsewhere on your disk are untouched."
        )
        if QMessageBox.question(self, "Remove photos", text) != QMessageBox.Yes:
            return
        for item in items:
            try:
                self.library.remove_image(item.data(Qt.UserRole))
            except LibraryError:
                pass  # already gone
            self.grid_items.pop(item.data(Qt.UserRole), None)
            self.grid.takeItem(self.grid.row(item))
        self.refresh_header()
        self.subject_changed.emit(self.subject.id)

    # ------------------------------------------------------------------ subject actions
    def add_photos(self) -> None:
        if self.subject is None:
            return
        paths, _ = QFileDialog.getOpenFileNames(
            self, f"Add photos of {self.subject.name}", self._last_dir, IMAGE_FILTER
        )
        if paths:
            self._last_dir = str(Path(paths[0]).parent)
            self.files_chosen.emit(self.subject.id, paths)

    def add_folder(self) -> None:
        if self.subject is None:
            return
        folder = QFileDialog.getExistingDirectory(self, f"Add a folder of photos of {self.subject.name}", self._last_dir)
        if folder:
            self._last_dir = folder
            self.files_chosen.emit(self.subject.id, [folder])

    def rename_subject(self) -> None:
        subject = self.subject
        if subject is not None and ask_until_valid(
            self, "Rename subject", f"New name for “{subject.name}”:", subject.name,
            lambda name: self.library.rename_subject(subject.id, name),
        ):
            self.subject_changed.emit(subject.id)

    def edit_token(self) -> None:
        subject = self.subject
        if subject is None:
            return
        vocabulary = self.vocabulary()
        label = f"Identifier token for {subject.name}, the word for it in prompts (e.g. <sks-dog>):"
        if self.library.activity(subject.id)["runs"]:
            label += "\nModels already trained keep the token they were trained with."
        if ask_until_valid(self, "Identifier token", label, subject.token,
                           lambda token: self.library.set_token(subject.id, token, vocabulary)):
            self.subject_changed.emit(subject.id)

    def delete_subject(self) -> None:
        subject = self.subject
        if subject is None:
            return
        if self.workers.importing_into(subject.id):
            self.status.emit(f"Wait for the import into {subject.name} to finish, or stop it.", True)
            return
        subject = self.library.subject(subject.id)  # the count now, not when it was selected
        made = sum(len(rows) for rows in self.library.activity(subject.id).values())
        text = (
            f"Delete “{subject.name}” and its {plural(subject.image_count, 'photo')} from the library?\n\n"
            "The library's copies of the photos are deleted. The original files elsewhere on your disk "
            "are untouched."
        )
        if made:
            text += f"\n\nThe library also forgets {plural(made, 'record')} of its training runs, galleries and edits."
        answer = QMessageBox.question(
            self, "Delete subject", text, QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel
        )
        if answer == QMessageBox.Yes:
            self.library.remove_subject(subject.id)
            self.subject = None
            self.subject_deleted.emit(subject.id)
            self.status.emit(f"Deleted {subject.name}.", False)
