"""Jobs dock: every job of this session, queued → running → done, with cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Job", "Kind", "State", "Progress", "Details")


class JobsDock(QDockWidget):
    def __init__(self, engine, parent=None):
        super().__init__("Jobs", parent)
        self.setObjectName("jobs_dock")
        self.engine = engine
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setColumnWidth(0, 50)
        self.tree.setColumnWidth(1, 110)
        self.tree.setColumnWidth(2, 80)
        self.tree.setColumnWidth(3, 110)
        self.cancel_button = QPushButton("Cancel job")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.clear_finished)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        self.setWidget(body)
        self._items: dict[str, QTreeWidgetItem] = {}
        engine.job_changed.connect(self.refresh_job)

    def refresh_job(self, job_id: str) -> None:
        record = self.engine.jobs.get(job_id)
        if record is None:
            return
        item = self._items.get(job_id)
        if item is None:
            item = self._items[job_id] = QTreeWidgetItem([job_id, record.kind, "", "", ""])
            item.setData(0, Qt.UserRole, job_id)
            self.tree.insertTopLevelItem(0, item)
        item.setText(2, record.state)
        if record.total:
            eta = f" · {record.eta_s:.0f}s" if record.eta_s and not record.done else ""
            item.setText(3, f"{record.step}/{record.total}{eta}")
        if record.error:
            item.setText(4, record.error.get("message", ""))
            item.setToolTip(4, record.error.get("message", "") + "\n" + record.error.get("hint", ""))
        elif record.label:
            item.setText(4, record.label)

    def selected_job(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.UserRole) if items else None

    def cancel_selected(self) -> None:
        job_id = self.selected_job()
        if job_id and not self.engine.jobs[job_id].done:
            self.engine.cancel(job_id)

    def clear_finished(self) -> None:
        for job_id, item in list(self._items.items()):
            if self.engine.jobs[job_id].done:
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                del self._items[job_id]
