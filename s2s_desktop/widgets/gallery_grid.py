"""A gallery as a grid: one row per prompt, one column per run (the base model, a run, a checkpoint),
and in every cell one thumbnail per seed (or one seed at a time, larger).

The layout is set first (from the job's parameters or a stored manifest), so the cells exist as
empty placeholders and fill in as the engine's ``artifact`` events arrive.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QImageReader, QPixmap
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QScrollArea, QSizePolicy, QWidget

SMALL = 96  # a thumbnail when every seed of a cell is shown
LARGE = 192  # one seed at a time
PROMPT_WIDTH = 170
PLACEHOLDER_STYLE = "QLabel { background: palette(alternate-base); border: 1px dashed palette(mid); color: palette(mid); }"
CELL_STYLE = "QLabel { background: palette(base); border: 1px solid palette(mid); }"


class Thumb(QLabel):
    """One cell image (a placeholder until its image arrives); click to open it."""

    clicked = Signal()
    menu_requested = Signal(QPoint)  # a right-click on an image: where (global)

    def __init__(self, seed: int, column: str = "", parent=None):
        super().__init__(parent)
        self.seed = seed
        self.column = column
        self.path = ""
        self.parameters = ""
        self.image = None  # the picture read at LARGE size, scaled down for SMALL
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet(PLACEHOLDER_STYLE)
        self.setText(f"seed {seed}")

    def set_image(self, path: str, parameters: str, image, size: int) -> None:
        self.path, self.parameters, self.image = path, parameters, image
        self.setStyleSheet(CELL_STYLE)
        self.setCursor(Qt.PointingHandCursor)
        self.show_at(size)

    def show_at(self, size: int) -> None:
        self.setFixedSize(size + 2, size + 2)
        if self.image is not None:
            pixmap = QPixmap.fromImage(self.image)
            if pixmap.width() != size and pixmap.height() != size:
                pixmap = pixmap.scaled(QSize(size, size), Qt.KeepAspectRatio, Qt.SmoothTransformation)
            self.setPixmap(pixmap)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self.path:
            self.clicked.emit()
        super().mouseReleaseEvent(event)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        if self.path:
            self.menu_requested.emit(event.globalPos())
            event.accept()


def read_thumbnail(path: str, size: int = LARGE):
    """The image decoded at ``size`` on its long side (small model outputs are enlarged), or None."""
    reader = QImageReader(path)
    original = reader.size()
    if original.isValid():
        reader.setScaledSize(original.scaled(size, size, Qt.KeepAspectRatio))
    image = reader.read()
    return None if image.isNull() else image


class GalleryGrid(QScrollArea):
    image_clicked = Signal(str, str)  # path, parameters ("" when the event brought none)
    image_menu_requested = Signal(str, str, QPoint)  # path, column key, where (global): a right-click

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.StyledPanel)
        self.columns: list[tuple[str, str]] = []  # (key, label)
        self.prompts: list[str] = []
        self.seeds: list[int] = []
        self.prior_prompt = ""
        self.seed_filter: int | None = None  # None: every seed in each cell
        self.thumbs: dict[tuple[str, int, int], Thumb] = {}  # (column, row, seed) → thumb (row -1: prior)
        self._container: QWidget | None = None
        self.empty = QLabel("No gallery yet: choose the columns, prompts and seeds, then press Generate.")
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setWordWrap(True)
        self.setWidget(self.empty)

    # ------------------------------------------------------------------ layout
    def set_layout(self, columns: list[tuple[str, str]], prompts: list[str], seeds: list[int],
                   prior_prompt: str = "") -> None:
        """Empty cells for every column × prompt × seed (and the class prompt, when there is one)."""
        self.columns, self.prompts, self.seeds = list(columns), list(prompts), list(seeds)
        self.prior_prompt = prior_prompt
        self.thumbs = {}
        if self.seed_filter not in self.seeds:
            self.seed_filter = None
        container = QWidget()
        grid = QGridLayout(container)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        corner = QLabel("<b>Prompt</b>")
        grid.addWidget(corner, 0, 0, Qt.AlignLeft | Qt.AlignBottom)
        for c, (_key, label) in enumerate(self.columns, start=1):
            header = QLabel(f"<b>{html.escape(label)}</b>")
            header.setWordWrap(True)
            header.setAlignment(Qt.AlignHCenter | Qt.AlignBottom)
            header.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
            grid.addWidget(header, 0, c)
        rows = [(r, prompt) for r, prompt in enumerate(self.prompts)]
        if prior_prompt:
            rows.append((-1, prior_prompt))
        for g, (row, prompt) in enumerate(rows, start=1):
            text = html.escape(prompt)
            if row < 0:
                text = f"<i>class prompt</i><br>{text}"
            label = QLabel(text)
            label.setWordWrap(True)
            label.setFixedWidth(PROMPT_WIDTH)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            grid.addWidget(label, g, 0, Qt.AlignTop)
            for c, (key, _label) in enumerate(self.columns, start=1):
                grid.addWidget(self._cell(key, row, prompt), g, c, Qt.AlignTop | Qt.AlignHCenter)
        grid.setColumnStretch(len(self.columns) + 1, 1)
        grid.setRowStretch(len(rows) + 1, 1)
        self._container = container
        self.setWidget(container)
        self._apply_filter()

    def _cell(self, column: str, row: int, prompt: str) -> QWidget:
        cell = QWidget()
        layout = QGridLayout(cell)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        per_row = max(1, math.ceil(math.sqrt(len(self.seeds))))
        for i, seed in enumerate(self.seeds):
            thumb = Thumb(seed, column)
            thumb.setToolTip(f"seed {seed} · {prompt}\nClick to open · right-click to edit it")
            thumb.clicked.connect(lambda t=thumb: self.image_clicked.emit(t.path, t.parameters))
            thumb.menu_requested.connect(lambda pos, t=thumb: self.image_menu_requested.emit(t.path, t.column, pos))
            self.thumbs[(column, row, seed)] = thumb
            layout.addWidget(thumb, i // per_row, i % per_row)
        return cell

    def clear(self) -> None:
        self.columns, self.prompts, self.seeds, self.prior_prompt, self.thumbs = [], [], [], "", {}
        self._container = None
        self.empty = QLabel("No gallery yet: choose the columns, prompts and seeds, then press Generate.")
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setWordWrap(True)
        self.setWidget(self.empty)

    # ------------------------------------------------------------------ images
    def add_image(self, column: str, row: int, seed: int, path: str, parameters: str = "") -> bool:
        """Put an image into its cell; False when the cell is not in the layout or the file is unreadable."""
        thumb = self.thumbs.get((column, int(row), int(seed)))
        if thumb is None:
            return False
        image = read_thumbnail(path)
        if image is None:
            return False
        thumb.set_image(path, parameters, image, self.thumb_size())
        return True

    def load_manifest(self, folder: Path, manifest: dict) -> int:
        """A stored gallery: its layout and every image its manifest lists; returns how many showed."""
        from engine.protocol.gallery import fill_template

        token, class_noun = manifest.get("token", ""), manifest.get("class_noun", "")
        prompts = [fill_template(t, token, class_noun) for t in manifest.get("prompts", [])]
        prior = manifest.get("prior_prompt", "")
        self.set_layout([(c["key"], c.get("label") or c["key"]) for c in manifest.get("columns", [])], prompts,
                        list(manifest.get("seeds", [])), fill_template(prior, "", class_noun) if prior else "")
        shown = 0
        for image in manifest.get("images", []):
            shown += self.add_image(image["column"], image["row"], image["seed"], str(Path(folder) / image["file"]))
        return shown

    def image_count(self) -> int:
        return sum(1 for thumb in self.thumbs.values() if thumb.path)

    def cell_seeds(self, column: str, row: int) -> list[int]:
        """The seeds whose image has arrived in one cell (for tests and the status line)."""
        return [seed for (key, r, seed), thumb in self.thumbs.items() if key == column and r == row and thumb.path]

    # ------------------------------------------------------------------ seeds shown
    def thumb_size(self) -> int:
        return LARGE if self.seed_filter is not None or len(self.seeds) == 1 else SMALL

    def set_seed_filter(self, seed: int | None) -> None:
        """Every seed in each cell (None), or one seed at a time, larger."""
        self.seed_filter = seed if seed in self.seeds else None
        self._apply_filter()

    def _apply_filter(self) -> None:
        size = self.thumb_size()
        for (_key, _row, seed), thumb in self.thumbs.items():
            visible = self.seed_filter is None or seed == self.seed_filter
            thumb.setVisible(visible)
            if visible:
                thumb.show_at(size)
