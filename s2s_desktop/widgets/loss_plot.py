"""A live loss curve drawn with QPainter (QtCharts is not part of PySide6-Essentials): the raw
per-step loss as faint dots, a smoothed line over it, and axes with round-number ticks.

Diffusion losses jump around a lot from step to step (each step draws new noise levels), so the
smoothed line is what tells a user whether training is going anywhere.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

RAW_COLOUR = QColor(120, 144, 180, 110)
SMOOTH_COLOUR = QColor(31, 97, 181)
GRID_COLOUR = QColor(0, 0, 0, 28)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 × 10ⁿ apart) covering low..high."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-6:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_text(value: float, ticks: list[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def smooth(values: list[float]) -> list[float]:
    """Bias-corrected exponential moving average; the window grows with the run (≈ n/15 steps)."""
    if not values:
        return []
    window = min(max(len(values) / 15, 1.0), 50.0)
    beta = 1.0 - 1.0 / window
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta**i) if beta > 0 else value)
    return out


class LossPlot(QWidget):
    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 14, 26, 30

    def __init__(self, parent=None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self._smoothed: list[float] | None = None
        self.total = 0
        self.placeholder = "The loss curve appears when training starts."
        self.setMinimumSize(260, 160)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        # live points arrive up to 10/s; four repaints a second look just as live
        self._repaint = QTimer(self)
        self._repaint.setSingleShot(True)
        self._repaint.setInterval(250)
        self._repaint.timeout.connect(self.update)

    # ------------------------------------------------------------------ data
    def clear(self, total: int = 0, placeholder: str | None = None) -> None:
        self.steps, self.losses, self._smoothed, self.total = [], [], None, total
        if placeholder is not None:
            self.placeholder = placeholder
        self.update()

    def set_total(self, total: int) -> None:
        self.total = total
        self.update()

    def set_points(self, points) -> None:
        pairs = sorted((int(s), float(v)) for s, v in points if math.isfinite(float(v)))
        self.steps = [s for s, _ in pairs]
        self.losses = [v for _, v in pairs]
        self._smoothed = None
        self.update()

    def add_point(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        # a resumed run repeats steps after its checkpoint: the new values replace the old ones
        cut = bisect_left(self.steps, step)
        del self.steps[cut:], self.losses[cut:]
        self.steps.append(int(step))
        self.losses.append(float(loss))
        self._smoothed = None
        if not self._repaint.isActive():
            self._repaint.start()

    def smoothed(self) -> list[float]:
        if self._smoothed is None:
            self._smoothed = smooth(self.losses)
        return self._smoothed

    def x_range(self) -> tuple[float, float]:
        return 0.0, float(max(self.total, self.steps[-1] if self.steps else 0, 1))

    def y_range(self) -> tuple[float, float]:
        """From 0 (an MSE loss) to a little above the bulk of the values: one wild step must not
        squash the rest of the curve into a flat line, so the top follows the 98th percentile."""
        if not self.losses:
            return 0.0, 1.0
        ordered = sorted(self.losses)
        bulk = ordered[min(len(ordered) - 1, int(0.98 * len(ordered)))]
        top = max(bulk, max(self.smoothed())) * 1.1
        low = min(0.0, ordered[0])
        top = top if top > low else low + 1.0
        ticks = nice_ticks(low, top)
        return low, max(top, ticks[-1])

    # ------------------------------------------------------------------ painting
    def plot_rect(self) -> QRectF:
        return QRectF(self.MARGIN_LEFT, self.MARGIN_TOP, max(self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT, 10),
                      max(self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM, 10))

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.base())
        area = self.plot_rect()
        (x0, x1), (y0, y1) = self.x_range(), self.y_range()

        def to_point(x: float, y: float) -> QPointF:
            y = min(max(y, y0), y1)  # outliers sit on the top edge instead of leaving the plot
            return QPointF(area.left() + (x - x0) / (x1 - x0) * area.width(),
                           area.bottom() - (y - y0) / (y1 - y0) * area.height())

        self._paint_axes(painter, area, (x0, x1), (y0, y1), to_point)
        if not self.losses:
            painter.setPen(palette.placeholderText().color())
            painter.drawText(area, Qt.AlignCenter | Qt.TextWordWrap, self.placeholder)
            return
        # One polygon per series: each painter call from Python costs, and long runs have many points.
        stride = max(1, len(self.steps) // max(int(area.width() * 2), 1))  # ≤ ~2 dots per pixel column
        raw = QPolygonF([to_point(self.steps[i], self.losses[i]) for i in range(0, len(self.steps), stride)])
        painter.setPen(QPen(RAW_COLOUR, 3.2, Qt.SolidLine, Qt.RoundCap))
        painter.drawPoints(raw)
        smoothed = QPolygonF([to_point(s, v) for s, v in zip(self.steps, self.smoothed(), strict=True)])
        painter.setPen(QPen(SMOOTH_COLOUR, 2.2))
        painter.drawPolyline(smoothed)
        self._paint_legend(painter)

    def _paint_axes(self, painter: QPainter, area: QRectF, xs, ys, to_point) -> None:
        text_colour = self.palette().text().color()
        metrics = painter.fontMetrics()
        y_ticks = nice_ticks(*ys)
        x_ticks = [t for t in nice_ticks(*xs, count=max(2, int(area.width() // 80))) if t == int(t)]
        ys_px = [to_point(xs[0], value).y() for value in y_ticks]
        xs_px = [to_point(value, ys[0]).x() for value in x_ticks]
        painter.setPen(GRID_COLOUR)
        painter.drawLines([QLineF(area.left(), y, area.right(), y) for y in ys_px]
                          + [QLineF(x, area.top(), x, area.bottom()) for x in xs_px])
        painter.setPen(QPen(text_colour, 1))
        for value, y in zip(y_ticks, ys_px, strict=True):
            label = tick_text(value, y_ticks)
            painter.drawText(QRectF(0, y - 8, area.left() - 6, 16), Qt.AlignRight | Qt.AlignVCenter, label)
        for value, x in zip(x_ticks, xs_px, strict=True):
            painter.drawText(QRectF(x - 30, area.bottom() + 3, 60, 14), Qt.AlignHCenter | Qt.AlignTop, f"{int(value)}")
        painter.drawLines([QLineF(area.bottomLeft(), area.bottomRight()), QLineF(area.bottomLeft(), area.topLeft())])
        painter.drawText(QRectF(area.right() - 60, area.bottom() + 15, 60, 14), Qt.AlignRight, "step")
        painter.drawText(QRectF(4, 4, 100, metrics.height()), Qt.AlignLeft | Qt.AlignVCenter, "loss")

    def _paint_legend(self, painter: QPainter) -> None:
        metrics = painter.fontMetrics()
        text = f"smoothed {self.smoothed()[-1]:.4f} at step {self.steps[-1]}"
        right = self.width() - self.MARGIN_RIGHT
        y = 4 + metrics.height() / 2
        text_width = metrics.horizontalAdvance(text)
        painter.setPen(self.palette().text().color())
        painter.drawText(QPointF(right - text_width, 4 + metrics.ascent()), text)
        painter.setPen(QPen(SMOOTH_COLOUR, 2.2))
        painter.drawLine(QPointF(right - text_width - 26, y), QPointF(right - text_width - 6, y))
        raw_x = right - text_width - 26 - metrics.horizontalAdvance("raw ") - 14
        painter.setPen(self.palette().text().color())
        painter.drawText(QPointF(raw_x + 10, 4 + metrics.ascent()), "raw")
        painter.setPen(Qt.NoPen)
        painter.setBrush(RAW_COLOUR.darker(120))
        painter.drawEllipse(QPointF(raw_x + 3, y), 2.5, 2.5)
