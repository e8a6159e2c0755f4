"""The Library page's two lower panels: what each import did with every file, and everything made
from the selected subject (training runs, galleries, edits)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from s2s_desktop.library import FileResult, ImportReport
from s2s_desktop.widgets.subject_dialog import sentence

REFUSED_COLOUR = QColor("#a93226")
DUPLICATE_COLOUR = QColor("#6c7a89")
WARNING_COLOUR = QColor("#8a6100")
MUTED_COLOUR = QColor("#7f8c8d")


def panel_header(title: str, *widgets: QWidget) -> QHBoxLayout:
    """A bold title and buttons on the right; one fixed height, so side-by-side panels line up."""
    row = QHBoxLayout()
    label = QLabel(f"<b>{title}</b>")
    label.setFixedHeight(28)
    row.addWidget(label)
    row.addStretch(1)
    for widget in widgets:
        widget.setFixedHeight(28)
        row.addWidget(widget)
    return row


def describe(result: FileResult) -> tuple[str, QColor | None]:
    """One line for one file, and its colour (None: the normal text colour)."""
    name = Path(result.path).name
    if result.status == "imported":
        return f"✓ {name} — added" + (f" ({result.reason})" if result.reason else ""), None
    if result.status == "duplicate":
        return f"= {name} — not added, duplicate: {result.reason}", DUPLICATE_COLOUR
    return f"✗ {name} — refused: {result.reason}", REFUSED_COLOUR


def summary(report: ImportReport) -> str:
    counts = {status: sum(r.status == status for r in report.results) for status in ("imported", "duplicate", "refused")}
    parts = [f"{counts['imported']} added"]
    if counts["duplicate"]:
        parts.append(f"{counts['duplicate']} duplicate{'s' if counts['duplicate'] != 1 else ''}")
    if counts["refused"]:
        parts.append(f"{counts['refused']} refused")
    return ", ".join(parts) + (" — stopped before the end" if report.cancelled else "")


class ImportBatchView:
    """The rows of one import: a bold header, then one row per file as results arrive."""

    def __init__(self, panel: ImportResultsPanel, subject_name: str, file_count: int):
        self.panel = panel
        self.subject_name = subject_name
        self.started = time.strftime("%H:%M")
        self.rows = 0
        self.header = QListWidgetItem()
        font = QFont()
        font.setBold(True)
        self.header.setFont(font)
        self.header.setFlags(Qt.ItemIsEnabled)
        panel.list.addItem(self.header)
        self.set_header(f"waiting to import {file_count} file{'s' if file_count != 1 else ''}…")

    def set_header(self, text: str) -> None:
        self.header.setText(f"{self.subject_name} · {self.started} — {text}")

    def _insert(self, text: str, colour: QColor | None, tooltip: str = "") -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setToolTip(tooltip or text)
        if colour is not None:
            item.setForeground(QBrush(colour))
        self.panel.list.insertItem(self.panel.list.row(self.header) + 1 + self.rows, item)
        self.rows += 1
        self.panel.list.scrollToItem(item)
        return item

    def add(self, result: FileResult) -> None:
        text, colour = describe(result)
        item = self._insert(text, colour, f"{result.path}\n{text}")
        item.setData(Qt.UserRole, result.status)
        if result.warning:
            self._insert(f"    ⚠ {sentence(result.warning)}", WARNING_COLOUR)

    def finish(self, report: ImportReport | None, error: str = "") -> None:
        if report is None:
            self.set_header(f"import stopped: {error}")
            self.header.setForeground(QBrush(REFUSED_COLOUR))
            return
        self.set_header(summary(report))
        for warning in report.warnings:
            self._insert(f"⚠ {sentence(warning)}", WARNING_COLOUR)


class ImportResultsPanel(QWidget):
    """Kept after an import finishes: the user must be able to see which photos were refused and why."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.setSelectionMode(QListWidget.NoSelection)
        self.placeholder = QLabel(
            "After an import, every file is listed here: ✓ added, = duplicate, or ✗ refused with the reason."
        )
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: palette(placeholder-text);")
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(panel_header("Import results", self.clear_button))
        layout.addWidget(self.placeholder)
        layout.addWidget(self.list, 1)
        self.clear()

    def start_batch(self, subject_name: str, file_count: int) -> ImportBatchView:
        self.placeholder.hide()
        self.list.show()
        self.clear_button.setEnabled(True)
        return ImportBatchView(self, subject_name, file_count)

    def show_report(self, report: ImportReport) -> None:
        """A whole import at once (the demo subjects)."""
        batch = self.start_batch(report.subject, len(report.results))
        for result in report.results:
            batch.add(result)
        batch.finish(report)

    def lines(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def clear(self) -> None:
        self.list.clear()
        self.list.hide()
        self.placeholder.show()
        self.clear_button.setEnabled(False)


def _when(row: dict) -> str:
    return (row.get("finished_at") or row.get("created_at") or "")[:16]


def _describe_run(row: dict) -> str:
    return f"{row.get('method', '?')} · {row.get('status', '?')} · {_when(row)}"


def _describe_generation(row: dict) -> str:
    prompt = row.get("prompt", "")
    return f"“{prompt[:60]}{'…' if len(prompt) > 60 else ''}” · seed {row.get('seed')} · {_when(row)}"


def _describe_edit(row: dict) -> str:
    source = Path(row.get("source_file") or "").name or "an image"
    return f"edit of {source} · {_when(row)}"


def _describe_gallery(row: dict) -> str:
    return f"{row.get('title') or 'gallery'} · {_when(row)}"


def _describe_evaluation(row: dict) -> str:
    try:
        stored = json.loads(row.get("metrics") or "{}")
    except ValueError:
        stored = {}
    titles = {m.get("name"): m.get("title", m.get("name")) for m in stored.get("metrics", [])}
    scores = ", ".join(f"{titles.get(k, k)} {v['value']:.3g}" for k, v in (stored.get("scores") or {}).items()
                       if isinstance(v, dict) and isinstance(v.get("value"), (int, float)))[:90]
    return f"{row.get('label') or row.get('column_key') or 'run'}: {scores or 'no scores'} · {_when(row)}"


SECTIONS = (  # table, heading, empty text, describe
    ("runs", "Training runs", "No training runs yet", _describe_run),
    ("galleries", "Galleries", "No galleries yet", _describe_gallery),
    ("generations", "Images", "", _describe_generation),
    ("edits", "Edits", "No edits yet", _describe_edit),
    ("evaluations", "Evaluations", "No evaluations yet", _describe_evaluation),
)


class ActivityPanel(QWidget):
    """Everything made from the selected subject, grouped, newest first; a finished run's row has
    "Try in a picture…" (the Edit page with that run chosen)."""

    try_run = Signal(int)  # run id

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QTreeWidget.NoSelection)
        self.tree.setColumnCount(2)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.try_buttons: dict[int, QPushButton] = {}  # run id → its button
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(panel_header("Made from this subject"))
        layout.addWidget(self.tree, 1)

    def show_activity(self, activity: dict[str, list[dict]], finished_runs: set[int] | frozenset = frozenset()) -> None:
        """``finished_runs``: the ids of runs with exports (they get "Try in a picture…")."""
        self.tree.clear()
        self.try_buttons = {}
        for table, heading, empty, describe_row in SECTIONS:
            rows = activity.get(table, [])
            if table in ("evaluations", "generations") and not rows:
                continue  # evaluations belong to galleries, loose images are rare: no empty headings
            top = QTreeWidgetItem([f"{heading} ({len(rows)})" if rows else heading])
            font = QFont()
            font.setBold(True)
            top.setFont(0, font)
            self.tree.addTopLevelItem(top)
            top.setFirstColumnSpanned(True)
            for row in rows:
                child = QTreeWidgetItem([describe_row(row)])
                child.setToolTip(0, str(row.get("file") or row.get("folder") or ""))
                top.addChild(child)
                if table == "runs" and row.get("id") in finished_runs:
                    button = QPushButton("Try in a picture…")
                    button.setToolTip("Open the Edit page with this run chosen and pick a picture to put the "
                                      "subject into")
                    button.clicked.connect(lambda _=False, run_id=row["id"]: self.try_run.emit(run_id))
                    self.tree.setItemWidget(child, 1, button)
                    self.try_buttons[row["id"]] = button
            if not rows:
                child = QTreeWidgetItem([empty])
                child.setForeground(0, QBrush(MUTED_COLOUR))
                top.addChild(child)
            top.setExpanded(True)

    def lines(self) -> list[str]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            out.append(top.text(0))
            out += [top.child(j).text(0) for j in range(top.childCount())]
        return out
