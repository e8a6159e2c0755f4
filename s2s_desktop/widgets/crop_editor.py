"""Crop editor: choose the square of a photo that training sees.

The crop is data in the upright image's pixels (:class:`Crop`); the stored original is never
rewritten. The canvas draws the photo scaled to fit and maps mouse positions back to image pixels,
so the saved crop is exact whatever the zoom.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.library import ImageRecord, Library, LibraryError
from s2s_desktop.library.imaging import Crop, ImageRefused, load_normalized

MIN_CROP = 64  # px of the original; smaller crops are mostly upscaling noise
SMALL_CROP = 256  # below this the info line warns that training will enlarge the crop
DISPLAY_MAX = 1600  # the on-screen copy of a big photo is downscaled to this (memory and paint speed)
HANDLE_REACH = 12  # widget px around a corner that grab it for resizing
WHEEL_STEP = 1.05  # size factor per wheel notch


def pil_to_pixmap(image) -> QPixmap:
    rgb = image.convert("RGB")
    data = rgb.tobytes()
    # copy(): the QImage must own its pixels once ``data`` goes away
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(qimage)


class CropCanvas(QWidget):
    """The photo with a square crop box: drag inside to move, drag a corner to resize, wheel to
    resize around the centre, arrow keys to nudge (Shift: 10 px), +/- to resize."""

    crop_changed = Signal(object)  # Crop

    def __init__(self, pixmap: QPixmap, width: int, height: int, parent=None):
        super().__init__(parent)
        self.pixmap = pixmap
        self.image_width, self.image_height = width, height
        self.min_size = min(MIN_CROP, width, height)
        self._crop = Crop.centre(width, height)
        self._drag: tuple | None = None  # (mode, press position, crop at press, anchor corner)
        self.setMouseTracking(True)  # cursor shape follows what a press would do
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def sizeHint(self) -> QSize:
        scale = min(760 / self.image_width, 560 / self.image_height)
        return QSize(max(320, round(self.image_width * scale)), max(240, round(self.image_height * scale)))

    # ------------------------------------------------------------------ geometry
    def scale(self) -> float:
        return min(self.width() / self.image_width, self.height() / self.image_height)

    def image_rect(self) -> QRectF:
        s = self.scale()
        w, h = self.image_width * s, self.image_height * s
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_widget(self, x: float, y: float) -> QPointF:
        origin = self.image_rect().topLeft()
        return QPointF(origin.x() + x * self.scale(), origin.y() + y * self.scale())

    def to_image(self, point: QPointF) -> tuple[float, float]:
        origin = self.image_rect().topLeft()
        return (point.x() - origin.x()) / self.scale(), (point.y() - origin.y()) / self.scale()

    def crop_rect(self) -> QRectF:
        """The crop box in widget coordinates (tests aim mouse events with it)."""
        c = self._crop
        top_left = self.to_widget(c.x, c.y)
        return QRectF(top_left.x(), top_left.y(), c.size * self.scale(), c.size * self.scale())

    # ------------------------------------------------------------------ crop
    def crop(self) -> Crop:
        return self._crop

    def set_crop(self, crop: Crop) -> None:
        crop = Crop(round(crop.x), round(crop.y), round(crop.size)).clamped(
            self.image_width, self.image_height, self.min_size
        )
        if crop != self._crop:
            self._crop = crop
            self.update()
            self.crop_changed.emit(crop)

    def resize_around_centre(self, factor: float) -> None:
        c = self._crop
        size = c.size * factor
        # at least one pixel per step, so slow wheels and small photos still respond
        size = max(size, c.size + 1) if factor > 1 else min(size, c.size - 1)
        size = max(self.min_size, min(size, self.image_width, self.image_height))
        cx, cy = c.x + c.size / 2, c.y + c.size / 2
        self.set_crop(Crop(round(cx - size / 2), round(cy - size / 2), round(size)))

    def _corner_at(self, point: QPointF) -> tuple[int, int] | None:
        """(sx, sy) of the corner under ``point``: +1 right/bottom, -1 left/top."""
        rect = self.crop_rect()
        for sx, x in ((-1, rect.left()), (1, rect.right())):
            for sy, y in ((-1, rect.top()), (1, rect.bottom())):
                if abs(point.x() - x) <= HANDLE_REACH and abs(point.y() - y) <= HANDLE_REACH:
                    return sx, sy
        return None

    # ------------------------------------------------------------------ mouse and keys
    def mousePressEvent(self, event) -> None:
        if event.button() != Qt.LeftButton:
            return
        point = event.position()
        corner = self._corner_at(point)
        c = self._crop
        if corner is not None:
            sx, sy = corner
            anchor = (c.x + (c.size if sx < 0 else 0), c.y + (c.size if sy < 0 else 0))  # the opposite corner
            self._drag = ("resize", point, c, (anchor, corner))
        else:
            if not self.crop_rect().contains(point):  # a click elsewhere brings the box there
                x, y = self.to_image(point)
                self.set_crop(Crop(round(x - c.size / 2), round(y - c.size / 2), c.size))
            self._drag = ("move", point, self._crop, None)

    def mouseMoveEvent(self, event) -> None:
        point = event.position()
        if self._drag is None:
            corner = self._corner_at(point)
            if corner is not None:
                self.setCursor(Qt.SizeFDiagCursor if corner[0] == corner[1] else Qt.SizeBDiagCursor)
            else:
                self.setCursor(Qt.SizeAllCursor if self.crop_rect().contains(point) else Qt.ArrowCursor)
            return
        mode, start, start_crop, extra = self._drag
        if mode == "move":
            # from the crop at press time, so rounding never accumulates
            dx, dy = (point.x() - start.x()) / self.scale(), (point.y() - start.y()) / self.scale()
            self.set_crop(Crop(round(start_crop.x + dx), round(start_crop.y + dy), start_crop.size))
        else:
            self._resize_from(extra, *self.to_image(point))

    def _resize_from(self, anchor_and_corner, mx: float, my: float) -> None:
        (ax, ay), (sx, sy) = anchor_and_corner
        room = min(self.image_width - ax if sx > 0 else ax, self.image_height - ay if sy > 0 else ay)
        size = max(sx * (mx - ax), sy * (my - ay))  # the corner follows the farther axis: stays square
        size = round(max(self.min_size, min(size, room)))
        self.set_crop(Crop(ax if sx > 0 else ax - size, ay if sy > 0 else ay - size, size))

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self._drag = None

    def wheelEvent(self, event) -> None:
        notches = event.angleDelta().y() / 120
        if notches:
            self.resize_around_centre(WHEEL_STEP**notches)
        event.accept()

    def keyPressEvent(self, event) -> None:
        step = 10 if event.modifiers() & Qt.ShiftModifier else 1
        moves = {Qt.Key_Left: (-step, 0), Qt.Key_Right: (step, 0), Qt.Key_Up: (0, -step), Qt.Key_Down: (0, step)}
        c = self._crop
        if event.key() in moves:
            dx, dy = moves[event.key()]
            self.set_crop(Crop(c.x + dx, c.y + dy, c.size))
        elif event.key() in (Qt.Key_Plus, Qt.Key_Equal):
            self.resize_around_centre(WHEEL_STEP)
        elif event.key() == Qt.Key_Minus:
            self.resize_around_centre(1 / WHEEL_STEP)
        else:
            super().keyPressEvent(event)

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        painter.fillRect(self.rect(), QColor(32, 32, 32))
        image_rect = self.image_rect()
        painter.drawPixmap(image_rect, self.pixmap, QRectF(self.pixmap.rect()))
        box = self.crop_rect()
        outside = QPainterPath()
        outside.addRect(image_rect)
        inner = QPainterPath()
        inner.addRect(box)
        painter.fillPath(outside.subtracted(inner), QColor(0, 0, 0, 150))  # dim what training ignores
        painter.setPen(QPen(QColor(255, 255, 255, 90), 1))
        for i in (1, 2):  # rule of thirds
            painter.drawLine(QPointF(box.left() + box.width() * i / 3, box.top()),
                             QPointF(box.left() + box.width() * i / 3, box.bottom()))
            painter.drawLine(QPointF(box.left(), box.top() + box.height() * i / 3),
                             QPointF(box.right(), box.top() + box.height() * i / 3))
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        painter.drawRect(box)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 1))
        painter.setBrush(QColor(255, 255, 255))
        for corner in (box.topLeft(), box.topRight(), box.bottomLeft(), box.bottomRight()):
            painter.drawRect(QRectF(corner.x() - 5, corner.y() - 5, 10, 10))
        painter.end()


class CropEditor(QDialog):
    """Edit one photo's crop; Save stores it in the library and emits ``saved`` with the new record."""

    saved = Signal(object)  # ImageRecord

    def __init__(self, library: Library, image: ImageRecord, parent=None):
        super().__init__(parent)
        self.library = library
        self.image = image
        self.setWindowTitle(f"Crop — {image.source_name}")
        hint = QLabel(
            "Training sees only what is inside the square. Drag it to move it, drag a corner or scroll "
            "to resize it; arrow keys nudge it."
        )
        hint.setWordWrap(True)
        self.info = QLabel()
        self.info.setWordWrap(True)
        try:
            pixmap, width, height = self._load(image)
            self.load_error = ""
        except ImageRefused as refusal:
            pixmap, width, height = QPixmap(), image.width, image.height
            self.load_error = f"This photo cannot be shown: {refusal.reason}"
        self.canvas = CropCanvas(pixmap, width, height)
        self.canvas.set_crop(image.crop)
        self.canvas.crop_changed.connect(self._show_info)

        self.reset_button = QPushButton("Reset to centre")
        self.reset_button.clicked.connect(self.reset_to_centre)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.reject)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        self.save_button.setEnabled(not self.load_error)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(hint)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.info)
        layout.addLayout(buttons)
        self._show_info(self.canvas.crop())
        self.canvas.setFocus()
        hint_size = self.canvas.sizeHint()  # the wrapped labels would otherwise shrink the dialog
        self.resize(hint_size.width() + 24, hint_size.height() + 120)

    @staticmethod
    def _load(image: ImageRecord) -> tuple[QPixmap, int, int]:
        upright = load_normalized(image.path)
        width, height = upright.size
        if max(width, height) > DISPLAY_MAX:
            upright.thumbnail((DISPLAY_MAX, DISPLAY_MAX))
        return pil_to_pixmap(upright), width, height

    def crop(self) -> Crop:
        return self.canvas.crop()

    def set_crop(self, crop: Crop) -> None:
        self.canvas.set_crop(crop)

    def reset_to_centre(self) -> None:
        self.canvas.set_crop(Crop.centre(self.canvas.image_width, self.canvas.image_height))

    def _show_info(self, crop: Crop) -> None:
        if self.load_error:
            self.info.setText(self.load_error)
            self.info.setStyleSheet("color: #a93226;")
            return
        text = (
            f"Crop {crop.size} × {crop.size} px at ({crop.x}, {crop.y}) of "
            f"{self.canvas.image_width} × {self.canvas.image_height}"
        )
        if crop.size < SMALL_CROP:
            text += f" — smaller than {SMALL_CROP} px, so training will enlarge it and lose detail"
        self.info.setText(text)

    def save(self) -> None:
        try:
            record = self.library.set_crop(self.image.id, self.crop())
        except LibraryError as exc:  # e.g. the photo was removed meanwhile
            self.info.setText(f"Could not save the crop: {exc}")
            self.info.setStyleSheet("color: #a93226;")
            return
        self.image = record
        self.saved.emit(record)
        self.accept()
