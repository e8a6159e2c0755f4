"""A prompt as a strip of word chips: click a word to see its heatmap (Ctrl-click: several), drag
its slider to reweight it (−2 … +5, 1 = as written; double-click resets), toggle "blend" to let
that word's area change under a local blend.

Words are ``prompt.split()`` (what the engine names in ``reweight``/``blend_words``); after an edit
the engine says which CLIP tokens each word became, shown in the chip's tooltip.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.protocol.editing import REWEIGHT_RANGE, normalise_word, prompt_words

STEPS_PER_UNIT = 10  # slider positions per 1.0 of weight: 0.1 resolution
CHIP_STYLE = """
QFrame#chip { border: 1px solid palette(mid); border-radius: 6px; background: palette(base); }
QFrame#chip[selected="true"] { border: 2px solid #e67e22; background: palette(alternate-base); }
QToolButton#word { font-size: 14px; font-weight: 600; border: none; padding: 2px 4px; }
QLabel#weight { font-size: 10px; color: palette(placeholder-text); }
QLabel#weight[changed="true"] { color: #2471a3; font-weight: 600; }
QToolButton#blend { font-size: 10px; padding: 0 2px; }
"""


class ResettableSlider(QSlider):
    """A slider a double-click puts back to its default."""

    reset = Signal()

    def __init__(self, default: int, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.default = default

    def mouseDoubleClickEvent(self, event) -> None:
        self.setValue(self.default)
        self.reset.emit()
        event.accept()


class WordButton(QToolButton):
    """Remembers the modifiers of the click (Ctrl-click adds to the selection)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.modifiers = Qt.NoModifier

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.modifiers = event.modifiers()
        super().mousePressEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802  (Space/Enter activate it too)
        self.modifiers = event.modifiers()
        super().keyPressEvent(event)


class WordChip(QFrame):
    clicked = Signal(int, bool)  # index, additive (Ctrl held)
    weight_changed = Signal(int, float)
    blend_toggled = Signal(int, bool)

    def __init__(self, index: int, word: str, editable: bool, parent=None):
        super().__init__(parent)
        self.index, self.word = index, word
        self.setObjectName("chip")
        self.setProperty("selected", False)
        self.word_button = WordButton()
        self.word_button.setObjectName("word")
        self.word_button.setText(word)
        self.word_button.clicked.connect(self._on_click)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(3, 2, 3, 3)
        layout.setSpacing(1)
        layout.addWidget(self.word_button, 0, Qt.AlignHCenter)
        self.slider: ResettableSlider | None = None
        self.blend_button: QToolButton | None = None
        if editable:
            low, high = REWEIGHT_RANGE
            self.slider = ResettableSlider(STEPS_PER_UNIT)
            self.slider.setRange(int(low * STEPS_PER_UNIT), int(high * STEPS_PER_UNIT))
            self.slider.setValue(STEPS_PER_UNIT)
            self.slider.setFixedWidth(max(60, min(84, 10 * len(word))))
            self.slider.setToolTip(f"Weight of “{word}”: {low:g} … {high:g}; 1 = as written, "
                                   "0 = ignored, negative = pushed away. Double-click to reset.")
            self.slider.valueChanged.connect(self._on_slider)
            self.weight_label = QLabel("×1.0")
            self.weight_label.setObjectName("weight")
            self.weight_label.setFixedWidth(28)  # "×-2.0" fits; fixed so chips stay narrow
            self.blend_button = QToolButton()
            self.blend_button.setObjectName("blend")
            self.blend_button.setText("blend")
            self.blend_button.setCheckable(True)
            self.blend_button.setFixedSize(34, 18)
            self.blend_button.setToolTip(f"Local blend: only the area where “{word}” is may change; "
                                         "the rest of the picture stays as it was")
            self.blend_button.toggled.connect(lambda on: self.blend_toggled.emit(self.index, on))
            row = QHBoxLayout()
            row.setSpacing(1)
            row.addWidget(self.weight_label)
            row.addStretch(1)
            row.addWidget(self.blend_button)
            layout.addWidget(self.slider)
            layout.addLayout(row)

    def _on_click(self) -> None:
        held = self.word_button.modifiers | QApplication.keyboardModifiers()
        additive = bool(held & (Qt.ControlModifier | Qt.MetaModifier))
        self.word_button.modifiers = Qt.NoModifier
        self.clicked.emit(self.index, additive)

    def _on_slider(self, value: int) -> None:
        self.show_weight()
        self.weight_changed.emit(self.index, value / STEPS_PER_UNIT)

    def show_weight(self) -> None:
        self.weight_label.setText(f"×{self.weight:.1f}")
        changed = self.slider.value() != STEPS_PER_UNIT
        if self.weight_label.property("changed") != changed:
            self.weight_label.setProperty("changed", changed)
            self.weight_label.style().polish(self.weight_label)

    @property
    def weight(self) -> float:
        return self.slider.value() / STEPS_PER_UNIT if self.slider else 1.0

    def set_selected(self, on: bool) -> None:
        if self.property("selected") != on:
            self.setProperty("selected", on)
            self.style().polish(self)


class TokenStrip(QScrollArea):
    """One prompt's words as chips, scrolling sideways when the prompt is long."""

    selection_changed = Signal(list)  # selected word indices
    word_clicked = Signal(str)  # the word the user clicked (not a selection the page made)
    reweight_changed = Signal(str, float)  # normalised word, weight (every slider move)
    blend_changed = Signal(list)  # blend words

    def __init__(self, editable: bool = True, parent=None):
        super().__init__(parent)
        self.editable = editable
        self.chips: list[WordChip] = []
        self.selected: list[int] = []
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setFixedHeight(92 if editable else 50)
        self.inner = QWidget()
        self.inner.setStyleSheet(CHIP_STYLE)
        self.row = QHBoxLayout(self.inner)
        self.row.setContentsMargins(2, 2, 2, 2)
        self.row.setSpacing(4)
        self.empty = QLabel("Type a prompt to see its words here.")
        self.empty.setStyleSheet("color: palette(placeholder-text);")
        self.row.addWidget(self.empty)
        self.row.addStretch(1)
        self.setWidget(self.inner)

    # ------------------------------------------------------------------ words
    def words(self) -> list[str]:
        return [chip.word for chip in self.chips]

    def set_prompt(self, prompt: str) -> None:
        """Rebuild the chips for a new prompt, keeping weights, blends and selection of words that
        are still there (editing one word must not reset the others' sliders)."""
        words = prompt_words(prompt)
        if words == self.words():
            return
        weights = {normalise_word(c.word): c.weight for c in self.chips if c.weight != 1.0}
        blends = set(self.blend_words())
        chosen = {normalise_word(self.chips[i].word) for i in self.selected if i < len(self.chips)}
        for chip in self.chips:
            self.row.removeWidget(chip)
            chip.deleteLater()
        self.chips = []
        for index, word in enumerate(words):
            chip = WordChip(index, word, self.editable)
            chip.clicked.connect(self._on_click)
            if chip.slider is not None:
                key = normalise_word(word)
                chip.slider.setValue(round(weights.get(key, 1.0) * STEPS_PER_UNIT))  # before connecting: no signal
                chip.blend_button.setChecked(key in blends)
                chip.weight_changed.connect(self._on_weight)
                chip.blend_toggled.connect(lambda *_: self.blend_changed.emit(self.blend_words()))
            self.row.insertWidget(index, chip)
            self.chips.append(chip)
        self.empty.setVisible(not words)
        self.selected = [i for i, w in enumerate(words) if normalise_word(w) in chosen]
        self._show_selection()

    def set_token_info(self, words: list[dict] | None, tokens: list[str] | None = None) -> None:
        """The engine's word → CLIP token indices (and token strings) for the tooltips."""
        words = words or []
        for chip in self.chips:
            info = words[chip.index] if chip.index < len(words) else None
            if info and normalise_word(info.get("word", "")) == normalise_word(chip.word):
                indices = info.get("tokens") or []
                pieces = [tokens[i] for i in indices if tokens and 0 <= i < len(tokens)]
                text = f"“{chip.word}” → CLIP token{'s' if len(indices) != 1 else ''} {', '.join(map(str, indices))}"
                text += f" ({' '.join(pieces)})" if pieces else ""
            else:
                text = f"“{chip.word}”: its tokens are known after the next edit"
            chip.word_button.setToolTip(text + "\nClick: show its heatmap · Ctrl-click: add to the heatmap")

    # ------------------------------------------------------------------ selection
    def _on_click(self, index: int, additive: bool) -> None:
        if additive:
            self.selected = [i for i in self.selected if i != index] if index in self.selected else [*self.selected, index]
        else:
            self.selected = [index]
        self._show_selection()
        self.selection_changed.emit(list(self.selected))
        self.word_clicked.emit(self.chips[index].word)

    def select(self, indices: list[int]) -> None:
        self.selected = [i for i in indices if 0 <= i < len(self.chips)]
        self._show_selection()
        self.selection_changed.emit(list(self.selected))

    def _show_selection(self) -> None:
        for chip in self.chips:
            chip.set_selected(chip.index in self.selected)

    # ------------------------------------------------------------------ reweights and blends
    def _on_weight(self, index: int, weight: float) -> None:
        self.reweight_changed.emit(normalise_word(self.chips[index].word), weight)

    def reweights(self) -> dict[str, float]:
        """{word: weight} of the words not at 1.0 (what the edit job's ``reweight`` takes)."""
        return {normalise_word(c.word): c.weight for c in self.chips if c.slider is not None and c.weight != 1.0}

    def set_reweights(self, weights: dict[str, float] | None) -> None:
        weights = {normalise_word(k): v for k, v in (weights or {}).items()}
        for chip in self.chips:
            if chip.slider is not None:
                chip.slider.blockSignals(True)
                chip.slider.setValue(round(weights.get(normalise_word(chip.word), 1.0) * STEPS_PER_UNIT))
                chip.slider.blockSignals(False)
                chip.show_weight()

    def blend_words(self) -> list[str]:
        return [normalise_word(c.word) for c in self.chips if c.blend_button is not None and c.blend_button.isChecked()]

    def set_blend_words(self, words: list[str] | None) -> None:
        wanted = {normalise_word(w) for w in words or []}
        for chip in self.chips:
            if chip.blend_button is not None:
                chip.blend_button.blockSignals(True)
                chip.blend_button.setChecked(normalise_word(chip.word) in wanted)
                chip.blend_button.blockSignals(False)
