"""Log dock: the engine's stderr (tracebacks, library warnings), also kept in a file."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QFont
from PySide6.QtWidgets import QDockWidget, QPlainTextEdit


class LogDock(QDockWidget):
    def __init__(self, engine, log_file: Path | None = None, parent=None):
        super().__init__("Engine log", parent)
        self.setObjectName("log_dock")
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(5000)
        font = QFont("monospace")
        font.setStyleHint(QFont.Monospace)
        font.setPointSize(9)
        self.view.setFont(font)
        self.setWidget(self.view)
        self._file = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log_file, "a", encoding="utf-8", buffering=1)
        engine.log_line.connect(self.append)
        engine.state_changed.connect(lambda state, detail: self.append(f"[app] engine {state}: {detail}".rstrip(": ")))

    def append(self, line: str) -> None:
        self.view.appendPlainText(line)
        if self._file is not None:
            self._file.write(line + "\n")

    def text(self) -> str:
        return self.view.toPlainText()
