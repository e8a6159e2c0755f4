"""Small controls of the Edit page: a slider that shows its number, and an attention schedule
(which part of the denoising steps an edit injects the source's attention into)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from s2s_desktop.widgets.token_strip import ResettableSlider


class ValueSlider(QWidget):
    """A float slider with its value beside it; double-click puts the default back."""

    value_changed = Signal(float)

    def __init__(self, low: float, high: float, default: float, step: float = 0.05, fmt: str = "{:.2f}",
                 parent=None):
        super().__init__(parent)
        self.step, self.fmt = step, fmt
        self.slider = ResettableSlider(round(default / step))
        self.slider.setRange(round(low / step), round(high / step))
        self.slider.setValue(round(default / step))
        self.label = QLabel()
        self.label.setMinimumWidth(44)
        self.label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        self.slider.valueChanged.connect(self._on_change)
        self._show()

    def _show(self) -> None:
        self.label.setText(self.fmt.format(self.value()))

    def _on_change(self, _position: int) -> None:
        self._show()
        self.value_changed.emit(self.value())

    def value(self) -> float:
        return round(self.slider.value() * self.step, 6)

    def set_value(self, value: float, quiet: bool = False) -> None:
        self.slider.blockSignals(quiet)
        self.slider.setValue(round(float(value) / self.step))
        self.slider.blockSignals(False)
        self._show()

    def setToolTip(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self.slider.setToolTip(text)
        super().setToolTip(text)


class ScheduleSlider(QWidget):
    """When an attention injection starts and ends, in percent of the steps.

    The job takes a fraction (``0.8``: the first 80 %) or a window (``[0.1, 0.8]``); a start of 0 is
    written as the fraction, the form the papers and the command line use."""

    changed = Signal()

    def __init__(self, default_end: float, parent=None):
        super().__init__(parent)
        self.start = ResettableSlider(0)
        self.end = ResettableSlider(round(default_end * 100))
        self.label = QLabel()
        self.label.setStyleSheet("color: palette(placeholder-text);")
        for slider in (self.start, self.end):
            slider.setRange(0, 100)
            slider.setPageStep(10)
        self.end.setValue(round(default_end * 100))
        for slider in (self.start, self.end):
            slider.valueChanged.connect(self._on_change)
        self.start.setToolTip("From which step on (0 % = the first step)")
        self.end.setToolTip("Until which step (100 % = the last step)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        for name, slider in (("start", self.start), ("end", self.end)):
            row = QHBoxLayout()
            caption = QLabel(name)
            caption.setFixedWidth(30)
            row.addWidget(caption)
            row.addWidget(slider, 1)
            layout.addLayout(row)
        layout.addWidget(self.label)
        self._show()

    def _on_change(self, _position: int) -> None:
        # keep start ≤ end: the slider the user moves pushes the other one along
        if self.start.value() > self.end.value():
            other = self.end if self.sender() is self.start else self.start
            other.blockSignals(True)
            other.setValue(self.sender().value())
            other.blockSignals(False)
        self._show()
        self.changed.emit()

    def _show(self) -> None:
        start, end = self.start.value(), self.end.value()
        if end == 0:
            text = "off"
        elif start == 0:
            text = f"the first {end} % of the steps"
        else:
            text = f"from {start} % to {end} % of the steps"
        self.label.setText(text)

    def value(self) -> float | list[float]:
        start, end = self.start.value() / 100, self.end.value() / 100
        return end if start == 0 else [start, end]

    def set_value(self, value, quiet: bool = False) -> None:
        start, end = (value if isinstance(value, (list, tuple)) else (0.0, value))
        for slider, fraction in ((self.start, start), (self.end, end)):
            slider.blockSignals(True)
            slider.setValue(round(float(fraction) * 100))
            slider.blockSignals(False)
        self._show()
        if not quiet:
            self.changed.emit()


def horizontal_slider(low: int, high: int, value: int) -> QSlider:
    slider = QSlider(Qt.Horizontal)
    slider.setRange(low, high)
    slider.setValue(value)
    return slider
