"""Pages whose features have not landed yet: they say what they will hold, and do nothing fake."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

PLANNED: dict[str, tuple[str, str]] = {}  # page key → (title, what it will hold); none at the moment


class UpcomingPage(QWidget):
    def __init__(self, key: str, parent=None):
        super().__init__(parent)
        title, text = PLANNED.get(key, (key.title(), ""))
        heading = QLabel(f"<h2>{title}</h2>")
        body = QLabel(text + "<br><br><i>Not available in this version yet.</i>")
        body.setWordWrap(True)
        body.setMaximumWidth(620)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(heading, 0, Qt.AlignHCenter)
        layout.addWidget(body, 0, Qt.AlignHCenter)
        layout.addStretch(2)


class UnavailablePage(QWidget):
    """A feature that cannot open right now, and why (the rest of the app keeps working)."""

    def __init__(self, title: str, problem: str, parent=None):
        super().__init__(parent)
        heading = QLabel(f"<h2>{title} unavailable</h2>")
        body = QLabel(problem)
        body.setObjectName("problem")
        body.setWordWrap(True)
        body.setMaximumWidth(620)
        body.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(heading, 0, Qt.AlignHCenter)
        layout.addWidget(body, 0, Qt.AlignHCenter)
        layout.addStretch(2)
