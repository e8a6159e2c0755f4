"""The Edit page's history: earlier edits from the library, newest first, as thumbnails with their
target prompts. Clicking one restores it."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.library import Library, LibraryError
from s2s_desktop.library import edits as library_edits
from s2s_desktop.library.edits import Edit

THUMB = 88
SHOWN = 200  # the newest this many; older edits stay in the library


def thumbnail(path: str, size: int = THUMB) -> QPixmap:
    reader = QImageReader(path)
    original = reader.size()
    if original.isValid():  # decode small pictures straight at thumbnail size
        reader.setScaledSize(original.scaled(size, size, Qt.KeepAspectRatio))
    image = reader.read()
    return QPixmap.fromImage(image) if not image.isNull() else QPixmap()


class EditHistory(QWidget):
    edit_chosen = Signal(object)  # Edit

    def __init__(self, library: Library | None, parent=None):
        super().__init__(parent)
        self.library = library
        self.title = QLabel("<b>History</b>")
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setViewMode(QListWidget.IconMode)
        self.list.setFlow(QListWidget.TopToBottom)
        self.list.setWrapping(False)
        self.list.setResizeMode(QListWidget.Adjust)
        self.list.setMovement(QListWidget.Static)
        self.list.setWordWrap(True)
        self.list.setGridSize(QSize(THUMB + 40, THUMB + 44))
        self.list.itemClicked.connect(self._on_click)
        self.list.itemActivated.connect(self._on_click)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected edit from the history (its files stay in the outputs folder)")
        self.remove_button.clicked.connect(self.remove_selected)
        self.empty = QLabel("Finished edits appear here." if library is not None
                            else "The library is unavailable, so edits are not remembered.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: palette(placeholder-text);")
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.empty)
        layout.addWidget(self.list, 1)
        self.setFixedWidth(THUMB + 66)

    def refresh(self, select_id: int | None = None) -> None:
        self.list.clear()
        edits = library_edits.list_edits(self.library, limit=SHOWN) if self.library is not None else []
        for edit in edits:
            picture = thumbnail(edit.file)
            icon = QIcon(picture)
            icon.addPixmap(picture, QIcon.Selected)  # Qt tints selected icons: colours are the point here
            item = QListWidgetItem(icon, edit.target_prompt[:48])
            item.setData(Qt.UserRole, edit.id)
            item.setToolTip(f"{edit.source_prompt} → {edit.target_prompt}\n{edit.created_at}")
            self.list.addItem(item)
            if edit.id == select_id:
                self.list.setCurrentItem(item)
        self.empty.setVisible(not edits)
        self.remove_button.setEnabled(bool(edits))
        self.title.setText(f"<b>History</b> ({len(edits)})" if edits else "<b>History</b>")

    def edit_ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    def _on_click(self, item: QListWidgetItem) -> None:
        try:
            edit: Edit = library_edits.get_edit(self.library, item.data(Qt.UserRole))
        except LibraryError:
            self.refresh()
            return
        self.edit_chosen.emit(edit)

    def remove_selected(self) -> None:
        item = self.list.currentItem()
        if item is None or self.library is None:
            return
        library_edits.delete_edit(self.library, item.data(Qt.UserRole))
        self.refresh()
