"""The middle of the Edit page: the canvas with its views, the prompts' words (reweight sliders,
blend toggles, heatmap picking) and the heatmap controls; it draws the heatmap overlay."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.protocol.editing import normalise_word
from s2s_desktop.library.heatmaps import HeatmapError, Heatmaps, legend, render_overlay
from s2s_desktop.widgets.edit_canvas import VIEW_TITLES, VIEWS, EditCanvas
from s2s_desktop.widgets.heatmap import HeatmapControls, to_qimage
from s2s_desktop.widgets.token_strip import TokenStrip

WORD_TABS = {"target": "Target words", "source": "Source words", "negative": "Negative words"}


def heatmap_word_indices(strip_words: list[str], heatmap_words: list[dict], chosen: list[int]) -> list[int]:
    """The heatmap file's word indices for the words chosen in a strip: by position when the two
    agree, else by the word itself (the prompt was edited since the heatmaps were made)."""
    keys = [normalise_word(w.get("word", "")) for w in heatmap_words]
    if [normalise_word(w) for w in strip_words] == keys:
        return [i for i in chosen if i < len(keys)]
    out = []
    for index in chosen:
        if index < len(strip_words) and normalise_word(strip_words[index]) in keys:
            out.append(keys.index(normalise_word(strip_words[index])))
    return out


class EditView(QWidget):
    view_changed = Signal(str)
    export_requested = Signal(bool)  # with the heatmap overlay

    def __init__(self, parent=None):
        super().__init__(parent)
        self.heatmaps: Heatmaps | None = None
        self.pictures: dict[str, np.ndarray | None] = {"original": None, "edited": None}
        self.overlay_pixels: np.ndarray | None = None

        # ---- views and export
        self.canvas = EditCanvas()
        self.view_buttons = QButtonGroup(self)
        bar = QHBoxLayout()
        for view in VIEWS:
            button = QToolButton()
            button.setText(VIEW_TITLES[view])
            button.setCheckable(True)
            button.setObjectName(f"view-{view}")
            self.view_buttons.addButton(button)
            button.clicked.connect(lambda _=False, v=view: self.set_view(v))
            bar.addWidget(button)
        bar.addStretch(1)
        self.smooth = QCheckBox("Smooth")
        self.smooth.setChecked(True)
        self.smooth.setToolTip("Scale small pictures smoothly; off: show their real pixels")
        self.smooth.toggled.connect(self._on_smooth)
        self.export_button = QPushButton("Export…")
        menu = QMenu(self.export_button)
        self.export_edited = QAction("Edited image…", self)
        self.export_edited.triggered.connect(lambda: self.export_requested.emit(False))
        self.export_both = QAction("Edited image and heatmap overlay…", self)
        self.export_both.triggered.connect(lambda: self.export_requested.emit(True))
        menu.addAction(self.export_edited)
        menu.addAction(self.export_both)
        self.export_button.setMenu(menu)
        self.export_button.setEnabled(False)
        bar.addWidget(self.smooth)
        bar.addWidget(self.export_button)

        # ---- words
        self.strips = {key: TokenStrip(editable=(key == "target")) for key in WORD_TABS}
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for key, title in WORD_TABS.items():
            self.tabs.addTab(self.strips[key], title)
            self.strips[key].selection_changed.connect(self._on_words_picked)
        self.tabs.currentChanged.connect(lambda *_: self.update_overlay())
        self.words_hint = QLabel("Click a word: its heatmap (Ctrl: several) · slider: its weight (double-click "
                                 "resets) · blend: change only its area")
        self.words_hint.setWordWrap(True)
        self.words_hint.setStyleSheet("color: palette(placeholder-text); font-size: 11px;")
        self.heatmap_controls = HeatmapControls()
        self.heatmap_controls.changed.connect(self.update_overlay)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.tabs)
        layout.addWidget(self.words_hint)
        layout.addWidget(self.heatmap_controls)
        self.set_view("edited")

    # ------------------------------------------------------------------ views
    def set_view(self, view: str) -> None:
        self.canvas.set_view(view)
        for button in self.view_buttons.buttons():
            button.setChecked(button.objectName() == f"view-{view}")
        self.view_changed.emit(view)

    def _on_smooth(self, on: bool) -> None:
        self.canvas.set_smooth(on)
        self.update_overlay()

    def set_pictures(self, original: np.ndarray | None, edited: np.ndarray | None) -> None:
        self.pictures = {"original": original, "edited": edited}
        for key, pixels in self.pictures.items():
            self.canvas.set_image(key, None if pixels is None else to_qimage(pixels))
        self.export_button.setEnabled(edited is not None)

    # ------------------------------------------------------------------ words and heatmaps
    def set_prompts(self, source: str, target: str, negative: str) -> None:
        self.strips["source"].set_prompt(source)
        self.strips["target"].set_prompt(target or source)  # an empty target means the source
        self.strips["negative"].set_prompt(negative)
        self.update_overlay()  # the chosen words may have moved

    def set_heatmaps(self, heatmaps: Heatmaps | None, source_words=None, target_words=None) -> None:
        self.heatmaps = heatmaps
        meta = heatmaps.meta.get("prompts", {}) if heatmaps else {}
        self.strips["source"].set_token_info(source_words or (heatmaps.words("source") if heatmaps else None),
                                             meta.get("source", {}).get("tokens"))
        self.strips["target"].set_token_info(target_words or (heatmaps.words("target") if heatmaps else None),
                                             meta.get("target", {}).get("tokens"))
        self.strips["negative"].set_token_info(heatmaps.words("negative") if heatmaps else None,
                                               meta.get("negative", {}).get("tokens"))
        self.heatmap_controls.set_heatmaps(heatmaps)  # emits changed → update_overlay

    def heatmap_prompt(self) -> str:
        return list(WORD_TABS)[self.tabs.currentIndex()]

    def _on_words_picked(self, _indices: list) -> None:
        sender = self.sender()
        key = next((k for k, strip in self.strips.items() if strip is sender), None)
        if key is not None and self.heatmap_prompt() != key:
            self.tabs.setCurrentIndex(list(WORD_TABS).index(key))
        if self.heatmaps is not None and self.canvas.view != "heatmap":
            self.set_view("heatmap")  # picking a word means "show me where it looks"
        self.update_overlay()

    def pick_words(self, prompt: str, words: list[str]) -> list[int]:
        """Select words (by text) in one prompt's strip for the heatmap; returns their indices."""
        strip = self.strips[prompt]
        wanted = {normalise_word(w) for w in words}
        indices = [i for i, w in enumerate(strip.words()) if normalise_word(w) in wanted]
        self.tabs.setCurrentIndex(list(WORD_TABS).index(prompt))
        strip.select(indices)
        return indices

    def update_overlay(self) -> None:
        """Draw the chosen words' heatmap over the picture they belong to."""
        self.overlay_pixels = None
        prompt = self.heatmap_prompt()
        strip = self.strips[prompt]
        heatmaps = self.heatmaps
        file_prompt = prompt
        if heatmaps is not None and prompt == "target" and "target" not in heatmaps.prompts:
            file_prompt = "source"  # an edit without a target prompt looks at the source's maps
        # source words look at the original; target (and negative) words made the edited picture
        picture = self.pictures["original" if file_prompt == "source" else "edited"]
        if heatmaps is None or picture is None or not strip.selected or file_prompt not in heatmaps.prompts:
            self.canvas.set_image("heatmap", None)
            self.canvas.set_legend(None)
            return
        indices = heatmap_word_indices(strip.words(), heatmaps.words(file_prompt), strip.selected)
        controls = self.heatmap_controls
        choice = controls.choice(file_prompt, indices)
        try:
            pixels, scale = render_overlay(picture, heatmaps, choice, controls.alpha.value(),
                                           smooth=self.smooth.isChecked())
        except HeatmapError as exc:
            self.canvas.set_image("heatmap", None)
            self.canvas.placeholder = str(exc)
            return
        self.overlay_pixels = pixels
        self.canvas.set_image("heatmap", to_qimage(pixels))
        chosen = " + ".join(strip.words()[i] for i in strip.selected if i < len(strip.words()))
        if choice.normalise == "share":
            text = f"{chosen}: top = {scale:.0%} of the attention"
        else:
            text = f"{chosen}: each word to its own peak"
        self.canvas.set_legend(to_qimage(legend()), text)
