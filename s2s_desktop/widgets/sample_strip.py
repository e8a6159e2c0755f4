"""The samples a run draws while it trains: a row per training step (step 0, before any training,
first), a column per prompt and seed, so the subject can be watched appearing over time."""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImageReader, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QScrollArea, QToolButton, QVBoxLayout, QWidget

MUTED_STYLE = "color: palette(placeholder-text);"


def load_thumbnail(path: str, size: int) -> QPixmap:
    """Decoded at thumbnail size; small model outputs are enlarged by a whole factor only, so their
    pixels stay square and sharp (a 64-px image shows at 64, not smeared to 72)."""
    reader = QImageReader(path)
    native = reader.size()
    if native.isValid() and max(native.width(), native.height()) > size:
        reader.setScaledSize(native.scaled(size, size, Qt.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return QPixmap()
    pixmap = QPixmap.fromImage(image)
    factor = size // max(pixmap.width(), pixmap.height(), 1)
    if factor >= 2:
        pixmap = pixmap.scaled(pixmap.size() * factor, Qt.KeepAspectRatio, Qt.FastTransformation)
    return pixmap


class SampleStrip(QWidget):
    sample_clicked = Signal(str)  # the sample's path

    def __init__(self, thumb: int = 80, parent=None):
        super().__init__(parent)
        self.thumb = thumb
        self.samples: dict[tuple[int, int, int], str] = {}  # (step, prompt index, seed) → path
        self.prompts: dict[int, str] = {}
        self._buttons: dict[tuple[int, int, int], QToolButton] = {}
        self._headers: list[QWidget] = []
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        self.placeholder = QLabel()
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet(MUTED_STYLE)
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(4)
        self.grid.setVerticalSpacing(4)
        self.grid.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.grid_host)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.NoFrame)
        self._follow = False  # a new newest row: scroll to it once it is laid out
        self._at_bottom = True  # the user has not scrolled up: stay with the newest rows
        bar = self.scroll.verticalScrollBar()
        bar.rangeChanged.connect(self._scroll_to_newest)
        bar.valueChanged.connect(lambda value: setattr(self, "_at_bottom", value >= bar.maximum() - 4))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.legend)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.scroll, 1)
        self.clear()

    def clear(self, placeholder: str = "Samples appear here: first what the model draws before training "
                                          "(step 0), then a row every time the run samples.") -> None:
        for widget in list(self._buttons.values()) + self._headers:
            widget.deleteLater()
        self._buttons.clear()
        self._headers.clear()
        self.samples.clear()
        self.prompts.clear()
        self.placeholder.setText(placeholder)
        self._refresh()

    def set_prompts(self, prompts: list[str]) -> None:
        self.prompts = dict(enumerate(prompts))
        self._refresh()

    def steps(self) -> list[int]:
        return sorted({step for step, _, _ in self.samples})

    def columns(self) -> list[tuple[int, int]]:
        return sorted({(p, s) for _, p, s in self.samples})

    def add_sample(self, step: int, prompt_index: int, seed: int, path: str, prompt: str = "") -> None:
        key = (int(step), int(prompt_index), int(seed))
        if prompt:
            self.prompts[key[1]] = prompt
        new_row = key[0] not in self.steps()
        self.samples[key] = path
        button = self._buttons.get(key)
        if button is None:
            button = self._buttons[key] = QToolButton()
            button.setAutoRaise(True)
            button.clicked.connect(lambda _=False, k=key: self.sample_clicked.emit(self.samples[k]))
        pixmap = load_thumbnail(path, self.thumb)
        button.setIconSize(pixmap.size() if not pixmap.isNull() else QSize(self.thumb, self.thumb))
        button.setIcon(QIcon(pixmap))
        button.setToolTip(f"step {key[0]} · seed {key[2]}\n{self.prompts.get(key[1], '')}\nclick to view full size")
        self._follow = new_row and key[0] == self.steps()[-1]  # show the newest row once it is laid out
        self._refresh()

    def _scroll_to_newest(self, _minimum: int, maximum: int) -> None:
        if self._follow or self._at_bottom:
            self._follow = False
            self.scroll.verticalScrollBar().setValue(maximum)

    def _refresh(self) -> None:
        """Lay the buttons out again (a new step or prompt moves everything after it)."""
        for widget in self._headers:
            widget.deleteLater()
        self._headers.clear()
        columns, steps = self.columns(), self.steps()
        self.placeholder.setVisible(not self.samples)
        self.legend.setVisible(bool(self.prompts) and bool(self.samples))
        self.legend.setText(" &nbsp; ".join(
            f"<b>#{i + 1}</b> {html.escape(p)}" for i, p in sorted(self.prompts.items())))
        if not self.samples:
            return
        for col, (prompt_index, seed) in enumerate(columns, start=1):
            header = self._header(f"#{prompt_index + 1} · seed {seed}", self.prompts.get(prompt_index, ""))
            header.setAlignment(Qt.AlignHCenter | Qt.AlignBottom)
            self.grid.addWidget(header, 0, col)
        for row, step in enumerate(steps, start=1):
            label = self._header(f"step {step}" + ("\nbefore" if step == 0 else ""), "")
            label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.grid.addWidget(label, row, 0)
            for col, (prompt_index, seed) in enumerate(columns, start=1):
                button = self._buttons.get((step, prompt_index, seed))
                if button is not None:
                    self.grid.addWidget(button, row, col)

    def _header(self, text: str, tooltip: str) -> QLabel:
        label = QLabel(text)
        label.setStyleSheet(MUTED_STYLE)
        label.setToolTip(tooltip)
        self._headers.append(label)
        return label
