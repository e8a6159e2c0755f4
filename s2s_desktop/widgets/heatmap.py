"""Heatmap controls of the Edit page (which steps, which layers, how to normalise, how opaque) and
the bridge from :mod:`s2s_desktop.library.heatmaps` (numpy) to Qt images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from s2s_desktop.library.heatmaps import NORMALISATIONS, HeatmapChoice, Heatmaps
from s2s_desktop.widgets.edit_controls import ValueSlider


def to_qimage(pixels: np.ndarray) -> QImage:
    """RGB ``uint8`` (h, w, 3) → a QImage that owns its pixels."""
    pixels = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    height, width = pixels.shape[:2]
    return QImage(pixels.data, width, height, 3 * width, QImage.Format_RGB888).copy()


def read_rgb(path: str | Path) -> np.ndarray | None:
    """A picture file as RGB ``uint8``, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError:
        return None


def short_layer_name(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2`` → ``down 1.0`` (the UNet's block and
    attention module; the full name is the tooltip)."""
    match = re.match(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)", name)
    if match:
        return f"{match[1]} {match[2]}.{match[3]}"
    match = re.match(r"mid_block\.attentions\.(\d+)", name)
    if match:
        return "middle" if match[1] == "0" else f"middle {match[1]}"
    return name if len(name) <= 24 else "…" + name[-23:]


class HeatmapControls(QWidget):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.heatmaps: Heatmaps | None = None
        self.step = QSlider(Qt.Horizontal)
        self.step.setRange(0, 0)
        self.step.setToolTip("Scrub through the denoising steps (early steps lay out the picture)")
        self.step.valueChanged.connect(self._on_step)
        self.all_steps = QCheckBox("All steps")
        self.all_steps.setChecked(True)
        self.all_steps.setToolTip("Average the maps of every denoising step")
        self.all_steps.toggled.connect(self._on_all_steps)
        self.step_label = QLabel("average of all steps")
        self.step_label.setMinimumWidth(150)
        self.resolution = QComboBox()
        self.resolution.setToolTip("Latent resolution of the attention layers (larger: sharper maps)")
        self.resolution.currentIndexChanged.connect(self._on_resolution)
        self.layer = QComboBox()
        self.layer.setToolTip("All layers at this resolution averaged, or one of them")
        self.layer.currentIndexChanged.connect(lambda *_: self._emit())
        self.normalise = QComboBox()
        for key, title in NORMALISATIONS.items():
            self.normalise.addItem(title, key)
        self.normalise.setItemData(0, "Each word scaled to its own peak: where does it look?", Qt.ToolTipRole)
        self.normalise.setItemData(1, "One scale for every word of the prompt: how much attention does it get?",
                                   Qt.ToolTipRole)
        self.normalise.currentIndexChanged.connect(lambda *_: self._emit())
        self.alpha = ValueSlider(0.0, 1.0, 0.6, step=0.05, fmt="{:.0%}")
        self.alpha.setToolTip("Opacity of the heatmap over the picture")
        self.alpha.value_changed.connect(lambda _: self._emit())

        self.layer.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.layer.setMinimumContentsLength(10)
        rows = QVBoxLayout(self)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.setSpacing(2)
        for widgets in (
            (QLabel("Step"), self.step, self.all_steps, self.step_label),
            (QLabel("Resolution"), self.resolution, QLabel("Layers"), self.layer),
            (QLabel("Scale"), self.normalise, QLabel("Opacity"), self.alpha),
        ):
            row = QHBoxLayout()
            widgets[0].setFixedWidth(70)
            for widget in widgets:
                row.addWidget(widget, 1 if isinstance(widget, (QSlider, ValueSlider)) or widget is self.layer else 0)
            rows.addLayout(row)
        self._quiet = False
        self.setEnabled(False)

    def _emit(self) -> None:
        if not self._quiet:
            self.changed.emit()

    def set_heatmaps(self, heatmaps: Heatmaps | None) -> None:
        """Fill the choices from a file, keeping what the user picked where the new file has it."""
        self.heatmaps = heatmaps
        self._quiet = True
        try:
            keep_resolution = self.resolution.currentData()
            self.resolution.clear()
            if heatmaps is not None:
                steps = heatmaps.steps
                self.step.setRange(0, max(steps - 1, 0))
                for resolution in heatmaps.resolutions:
                    self.resolution.addItem(f"{resolution}×{resolution}", resolution)
                index = self.resolution.findData(keep_resolution)
                self.resolution.setCurrentIndex(max(index, 0))
                self._fill_layers()
            self._show_step()
        finally:
            self._quiet = False
        self.setEnabled(heatmaps is not None)
        self.changed.emit()

    def _fill_layers(self) -> None:
        keep = self.layer.currentData()
        self.layer.clear()
        self.layer.addItem("All layers", None)
        if self.heatmaps is not None and self.resolution.currentData() is not None:
            for index, name in enumerate(self.heatmaps.layers(self.resolution.currentData())):
                self.layer.addItem(short_layer_name(name), index)
                self.layer.setItemData(self.layer.count() - 1, name, Qt.ToolTipRole)
        self.layer.setCurrentIndex(max(self.layer.findData(keep), 0))

    def _on_resolution(self, _index: int) -> None:
        was_quiet, self._quiet = self._quiet, True
        self._fill_layers()
        self._quiet = was_quiet
        self._emit()

    def _on_step(self, _value: int) -> None:
        if self.all_steps.isChecked():  # scrubbing means "this step"
            self.all_steps.blockSignals(True)
            self.all_steps.setChecked(False)
            self.all_steps.blockSignals(False)
        self._show_step()
        self._emit()

    def _on_all_steps(self, _on: bool) -> None:
        self._show_step()
        self._emit()

    def _show_step(self) -> None:
        if self.all_steps.isChecked() or self.heatmaps is None:
            self.step_label.setText("average of all steps")
            return
        step = self.step.value()
        timesteps = self.heatmaps.meta.get("timesteps") or []
        t = f" (t = {timesteps[step]})" if step < len(timesteps) else ""
        self.step_label.setText(f"step {step + 1} of {self.heatmaps.steps}{t}")

    def choice(self, prompt: str, words: list[int]) -> HeatmapChoice:
        return HeatmapChoice(
            prompt=prompt,
            words=tuple(words),
            steps=None if self.all_steps.isChecked() else self.step.value(),
            resolution=self.resolution.currentData(),
            layer=self.layer.currentData(),
            normalise=self.normalise.currentData(),
        )
