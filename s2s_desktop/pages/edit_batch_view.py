"""The window of a batch edit: every picture as a row (name, original | edited), filling in as the
engine finishes them one after another, with Cancel (keeps what finished) and Export.

The model is :class:`s2s_desktop.edit_batch.EditBatch`; each finished edit is recorded in the
library's history like a single edit."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from qasync import asyncSlot

from engine import protocol
from s2s_desktop.edit_batch import DONE, FAILED, RUNNING, STATE_TITLES, EditBatch
from s2s_desktop.library import LibraryError
from s2s_desktop.library import edits as library_edits
from s2s_desktop.widgets.setters import set_enabled, set_progress, set_text

THUMB = 150
ERROR_STYLE = "color: #a93226;"
EMPTY_STYLE = ("QLabel { background: palette(alternate-base); border: 1px dashed palette(mid); "
               "color: palette(placeholder-text); }")
CELL_STYLE = "QLabel { background: palette(base); border: 1px solid palette(mid); }"


def _thumb(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setFixedSize(THUMB + 2, THUMB + 2)
    label.setAlignment(Qt.AlignCenter)
    label.setWordWrap(True)
    label.setStyleSheet(EMPTY_STYLE)
    return label


def _show_picture(label: QLabel, path: str) -> bool:
    pixmap = QPixmap(path)
    if pixmap.isNull():
        return False
    label.setStyleSheet(CELL_STYLE)
    label.setPixmap(pixmap.scaled(THUMB, THUMB, Qt.KeepAspectRatio,
                                  Qt.FastTransformation if max(pixmap.width(), pixmap.height()) < THUMB
                                  else Qt.SmoothTransformation))
    return True


class BatchView(QDialog):
    """Runs a batch through the engine and shows it."""

    batch_over = Signal()

    def __init__(self, engine, batch: EditBatch, library=None, subject_id: int | None = None, title: str = "",
                 parent=None):
        super().__init__(parent)
        self.setWindowTitle(title or "Batch edit")
        self.engine = engine
        self.batch = batch
        self.library = library
        self.subject_id = subject_id
        self.job: str | None = None
        self._waiter: asyncio.Future | None = None
        self.recorded: list[int] = []  # edit ids added to the history
        self.resize(620, 720)

        self.heading = QLabel(f"<b>{html.escape(title or 'Batch edit')}</b>")
        self.heading.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, max(len(batch.items), 1))
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        grid_widget = QWidget()
        grid = QGridLayout(grid_widget)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        for c, text in enumerate(("<b>Picture</b>", "<b>Original</b>", "<b>Edited</b>")):
            grid.addWidget(QLabel(text), 0, c, Qt.AlignLeft | Qt.AlignBottom)
        self.names: list[QLabel] = []
        self.originals: list[QLabel] = []
        self.edits: list[QLabel] = []
        for r, item in enumerate(batch.items, start=1):
            name = QLabel()
            name.setWordWrap(True)
            name.setFixedWidth(200)
            name.setTextInteractionFlags(Qt.TextSelectableByMouse)
            original, edited = _thumb(), _thumb()
            _show_picture(original, item.picture)  # the picture itself until the engine's version comes
            self.names.append(name)
            self.originals.append(original)
            self.edits.append(edited)
            grid.addWidget(name, r, 0, Qt.AlignTop)
            grid.addWidget(original, r, 1, Qt.AlignTop)
            grid.addWidget(edited, r, 2, Qt.AlignTop)
            self._show_row(r - 1)
        grid.setColumnStretch(3, 1)
        grid.setRowStretch(len(batch.items) + 1, 1)
        self.scroll = QScrollArea()
        self.scroll.setWidget(grid_widget)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.StyledPanel)

        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after cancelling the picture being edited; the finished ones are kept")
        self.cancel_button.clicked.connect(self.on_cancel)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the original | edited grid as a PNG and every edited picture "
                                      "into a folder")
        self.export_button.clicked.connect(self.choose_export)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        engine.event.connect(self.on_event)
        self._update()

    # ------------------------------------------------------------------ rows
    def _show_row(self, index: int, step: int = 0, total: int = 0) -> None:
        item = self.batch.items[index]
        how = {"regenerated": "regenerated from its prompt and seed", "inverted": "inverted"}.get(item.how, "")
        text = f"<b>{html.escape(item.name)}</b>"
        if item.params:
            text += f"<br>→ {html.escape(item.params.get('target_prompt') or item.params.get('source_prompt', ''))}"
        if how:
            text += f"<br><i>{how}</i>"
        state = STATE_TITLES[item.state]
        if item.state == RUNNING and total:
            state = f"editing… step {step}/{total}"
        self.names[index].setText(text)
        if item.state == DONE:
            if item.original:
                _show_picture(self.originals[index], item.original)
            if not _show_picture(self.edits[index], item.edited):
                self.edits[index].setText("the edited file is gone")
        else:
            message = f"{state}: {item.error}" if item.state == FAILED and item.error else state
            set_text(self.edits[index], message)
            tip = item.error if item.state == FAILED else ""
            self.edits[index].setToolTip(tip)

    def _update(self) -> None:
        batch = self.batch
        finished = sum(1 for item in batch.items if item.state not in ("waiting", RUNNING))
        set_progress(self.progress, finished, max(len(batch.items), 1))
        set_enabled(self.cancel_button, not batch.over)
        set_enabled(self.export_button, bool(batch.done()))
        if batch.over:
            set_text(self.status, batch.summary())

    def edited_count(self) -> int:
        """Rows whose edited picture is on screen."""
        return sum(1 for label in self.edits if label.pixmap() is not None and not label.pixmap().isNull())

    # ------------------------------------------------------------------ running
    @asyncSlot()
    async def start(self) -> None:
        await self.run()

    async def run(self) -> None:
        """The pictures one after another, until all are done or the batch is cancelled."""
        batch = self.batch
        while (index := batch.next_index()) is not None:
            item = batch.start(index)
            self._show_row(index)
            self._update()
            position = sum(1 for i in batch.items[: index + 1] if i.params) or index + 1
            set_text(self.status, f"Picture {position} of {sum(1 for i in batch.items if i.params)}: {item.name}…")
            params = dict(item.params, name=f"batch-{index + 1:03d}-{Path(item.picture).stem}"[:100])
            try:
                protocol.validate_job("edit", params)
                job = await self.engine.submit("edit", params, label=f"batch edit: {item.name}"[:60])
            except Exception as exc:
                batch.fail(index, getattr(exc, "message", None) or str(exc))
                self._show_row(index)
                self._update()
                continue
            self.job = job
            self._waiter = asyncio.get_running_loop().create_future()
            record = getattr(self.engine, "jobs", {}).get(job)
            if record is not None and getattr(record, "done", False):  # it ended before submit answered
                self._waiter.set_result({"event": record.state, "result": record.result, "error": record.error})
            elif batch.cancelled:
                self.engine.cancel(job)
            message = await self._waiter
            self.job, self._waiter = None, None
            self._end(index, message)
        self._update()
        self.batch_over.emit()

    def on_event(self, message: dict) -> None:
        if self.job is None or message.get("job") != self.job:
            return
        name = message.get("event")
        index = self.batch.running()
        if name == "progress" and index is not None:
            self._show_row(index, int(message.get("step") or 0), int(message.get("total") or 0))
        elif name in protocol.TERMINAL_EVENTS and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(message)

    def _end(self, index: int, message: dict) -> None:
        name = message.get("event")
        if name == "finished":
            self.batch.finish(index, message.get("result") or {})
            if self.batch.items[index].state == DONE:
                self.record(index)
        elif name == "cancelled":
            self.batch.end_cancelled(index)
        else:
            error = message.get("error") or {}
            hint = error.get("hint")
            self.batch.fail(index, str(error.get("message") or "the edit failed") + (f" — {hint}" if hint else ""))
        self._show_row(index)
        self._update()

    def record(self, index: int) -> None:
        item = self.batch.items[index]
        if self.library is None:
            return
        try:
            edit = library_edits.record_edit(self.library, item.params, item.result, self.subject_id)
        except (LibraryError, OSError) as exc:
            item.error = f"not added to the history: {exc}"
            return
        self.recorded.append(edit.id)

    def on_cancel(self) -> None:
        if self.batch.over:
            return
        self.batch.cancel()
        if self.job:
            self.engine.cancel(self.job)
            set_text(self.status, "Cancelling the picture being edited; the finished ones are kept…")
        for index in range(len(self.batch.items)):
            self._show_row(index)
        self._update()

    # ------------------------------------------------------------------ export
    def choose_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the batch into a folder", str(Path.home()))
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str | Path) -> list[Path]:
        try:
            written = self.batch.export(folder)
        except OSError as exc:
            self.status.setStyleSheet(ERROR_STYLE)
            set_text(self.status, f"Could not export to {folder}: {exc}")
            return []
        self.status.setStyleSheet("")
        set_text(self.status, f"Exported the grid and {len(written) - 1} edited pictures to {folder}.")
        return written

    def closeEvent(self, event) -> None:  # noqa: N802  (closing the window stops the batch)
        self.on_cancel()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self.on_cancel()
        try:
            self.engine.event.disconnect(self.on_event)
        except (RuntimeError, TypeError):
            pass
