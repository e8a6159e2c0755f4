"""The Edit page's canvas: the original, the edited picture, the heatmap overlay, or both pictures
split by a divider the user drags (before on the left, after on the right).

Pictures are scaled to fill the canvas keeping their aspect: smoothly, or nearest-neighbour so a
64-pixel model output shows its real pixels.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

VIEWS = ("original", "edited", "heatmap", "compare")
VIEW_TITLES = {"original": "Original", "edited": "Edited", "heatmap": "Heatmap", "compare": "Before / after"}
MARGIN = 8


class EditCanvas(QWidget):
    divider_moved = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view = "edited"
        self.smooth = True
        self.divider = 0.5  # fraction of the picture's width left of the divider
        self.images: dict[str, QImage | None] = {"original": None, "edited": None, "heatmap": None}
        self.legend: QImage | None = None
        self.legend_text = ""
        self.placeholder = "Open a picture, or type a source prompt, then press Edit."
        self.setMinimumSize(260, 220)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(560, 420)

    # ------------------------------------------------------------------ content
    def set_image(self, which: str, image: QImage | None) -> None:
        self.images[which] = image if image is not None and not image.isNull() else None
        self.update()

    def set_legend(self, image: QImage | None, text: str = "") -> None:
        self.legend, self.legend_text = image, text
        self.update()

    def set_view(self, view: str) -> None:
        self.view = view
        self.setCursor(Qt.SplitHCursor if view == "compare" else Qt.ArrowCursor)
        self.update()

    def set_smooth(self, on: bool) -> None:
        self.smooth = on
        self.update()

    def shown_image(self) -> QImage | None:
        """The picture the current view shows (compare: the edited one)."""
        return self.images["edited" if self.view == "compare" else self.view]

    # ------------------------------------------------------------------ geometry
    def image_rect(self, image: QImage | None = None) -> QRectF:
        """Where a picture is drawn: as large as fits, centred, aspect kept."""
        image = image or self.shown_image() or self.images["original"] or self.images["edited"]
        area = QRectF(self.rect()).adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        if image is None or image.width() == 0 or image.height() == 0:
            return area
        scale = min(area.width() / image.width(), area.height() / image.height())
        width, height = image.width() * scale, image.height() * scale
        return QRectF(area.center().x() - width / 2, area.center().y() - height / 2, width, height)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 38, 40))
        painter.setRenderHint(QPainter.SmoothPixmapTransform, self.smooth)
        if self.view == "compare":
            self._paint_compare(painter)
        else:
            image = self.images.get(self.view)
            if image is None:
                self._paint_placeholder(painter, self._missing_text())
            else:
                painter.drawImage(self.image_rect(image), image)
                if self.view == "heatmap":
                    self._paint_legend(painter)
        painter.end()

    def _missing_text(self) -> str:
        if not any(self.images.values()):
            return self.placeholder
        if self.view == "heatmap":
            return "Click a word below to see where it looks."
        return f"No {VIEW_TITLES[self.view].lower()} picture yet."

    def _paint_placeholder(self, painter: QPainter, text: str) -> None:
        painter.setPen(QColor(200, 200, 200))
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        painter.setFont(font)
        painter.drawText(self.rect().adjusted(30, 30, -30, -30), Qt.AlignCenter | Qt.TextWordWrap, text)

    def _paint_compare(self, painter: QPainter) -> None:
        before, after = self.images["original"], self.images["edited"]
        if before is None or after is None:
            self._paint_placeholder(painter, "Before / after needs an edit: press Edit first.")
            return
        rect = self.image_rect(after)
        split = rect.left() + rect.width() * self.divider
        painter.save()
        painter.setClipRect(QRectF(rect.left(), rect.top(), split - rect.left(), rect.height()))
        painter.drawImage(rect, before)
        painter.setClipRect(QRectF(split, rect.top(), rect.right() - split, rect.height()))
        painter.drawImage(rect, after)
        painter.restore()
        painter.setRenderHint(QPainter.Antialiasing, True)
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        painter.drawLine(QPointF(split, rect.top()), QPointF(split, rect.bottom()))
        painter.setBrush(QColor(255, 255, 255))
        painter.drawEllipse(QPointF(split, rect.center().y()), 9, 9)
        painter.setPen(QPen(QColor(60, 60, 60), 2))
        middle = rect.center().y()
        painter.drawLine(QPointF(split - 4, middle), QPointF(split + 4, middle))
        self._tag(painter, "Before", QPointF(rect.left() + 8, rect.top() + 8), left=True)
        self._tag(painter, "After", QPointF(rect.right() - 8, rect.top() + 8), left=False)

    def _tag(self, painter: QPainter, text: str, at: QPointF, left: bool) -> None:
        metrics = painter.fontMetrics()
        width, height = metrics.horizontalAdvance(text) + 12, metrics.height() + 4
        box = QRectF(at.x() if left else at.x() - width, at.y(), width, height)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 150))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignCenter, text)

    def _paint_legend(self, painter: QPainter) -> None:
        if self.legend is None:
            return
        rect = self.image_rect()
        bar = QRect(int(rect.left() + 10), int(rect.bottom() - 24), 140, 10)
        metrics = painter.fontMetrics()
        text_width = metrics.horizontalAdvance(self.legend_text)
        back = QRectF(bar.left() - 6, bar.top() - metrics.height() - 6, max(bar.width(), text_width) + 12,
                      bar.height() + metrics.height() + 12)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(0, 0, 0, 160))
        painter.drawRoundedRect(back, 4, 4)
        painter.drawImage(bar, self.legend)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(QRectF(bar.left(), back.top() + 2, back.width(), metrics.height()), Qt.AlignLeft,
                         self.legend_text)

    # ------------------------------------------------------------------ the divider
    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self.view == "compare" and event.button() == Qt.LeftButton:
            self._move_divider(event.position().x())

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self.view == "compare" and event.buttons() & Qt.LeftButton:
            self._move_divider(event.position().x())

    def _move_divider(self, x: float) -> None:
        rect = self.image_rect(self.images["edited"])
        if rect.width() <= 0:
            return
        self.divider = min(max((x - rect.left()) / rect.width(), 0.0), 1.0)
        self.divider_moved.emit(self.divider)
        self.update()
