"""Full-size view of one generated image with its parameters."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.image_meta import parse_parameters


class ImageViewer(QDialog):
    reuse_requested = Signal(dict)  # parsed parameters

    def __init__(self, path: str, parameters: str, parent=None, reusable: bool = True):
        super().__init__(parent)
        self.path = path
        self.parameters = parameters
        self.setWindowTitle(Path(path).name)
        self.setAttribute(Qt.WA_DeleteOnClose)

        self.image_label = QLabel(alignment=Qt.AlignCenter)
        pixmap = QPixmap(path)
        self.original_size = pixmap.size()
        if 0 < max(pixmap.width(), pixmap.height()) < 384:
            # Small model outputs: enlarge by a whole factor, nearest-neighbour, so pixels stay honest.
            factor = 384 // max(pixmap.width(), pixmap.height())
            pixmap = pixmap.scaled(pixmap.size() * factor, Qt.KeepAspectRatio, Qt.FastTransformation)
        self.image_label.setPixmap(pixmap)
        scroll = QScrollArea()
        scroll.setWidget(self.image_label)
        scroll.setWidgetResizable(True)
        scroll.setAlignment(Qt.AlignCenter)

        self.text = QPlainTextEdit(parameters or "(this image carries no generation parameters)")
        self.text.setReadOnly(True)
        size = QLabel(f"{self.original_size.width()} × {self.original_size.height()} px · {path}")
        size.setWordWrap(True)
        size.setTextInteractionFlags(Qt.TextSelectableByMouse)

        copy = QPushButton("Copy parameters")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.parameters))
        reuse = QPushButton("Use these settings")
        reuse.setEnabled(bool(parameters))
        reuse.setVisible(reusable)  # a training sample's settings are not the Generate page's
        reuse.clicked.connect(self._reuse)
        folder = QPushButton("Open folder")
        folder.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))))
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for button in (copy, reuse, folder):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(close)

        side = QVBoxLayout()
        side.addWidget(QLabel("<b>Parameters</b>"))
        side.addWidget(self.text, 1)
        side.addWidget(size)
        side_widget = QWidget()
        side_widget.setLayout(side)
        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(side_widget)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)
        self.resize(min(max(pixmap.width(), 256) + 380, 1400), min(max(pixmap.height(), 256) + 90, 1000))

    def _reuse(self) -> None:
        self.reuse_requested.emit(parse_parameters(self.parameters))
        self.close()
