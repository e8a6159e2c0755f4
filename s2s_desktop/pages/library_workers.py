"""Work the Library page keeps off the GUI thread: thumbnails, subject covers and imports.

Workers run in thread pools (the library opens one sqlite connection per thread). Each reports back
through a private signal; Qt queues it to the GUI thread, where this object lives, so everything the
public signals carry is handled on the GUI thread and may touch widgets.
"""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap

from s2s_desktop.library import ImageRecord, ImportLimits, Library, Subject, import_files

THUMB_PIXELS = 192  # rendered a little larger than the grid shows them, so icons stay sharp
COVER_PIXELS = 96


def thumbnail_key(record: ImageRecord) -> str:
    """Which picture a grid item shows: the photo and its crop (a new crop is a new thumbnail)."""
    c = record.crop
    return f"{record.pixel_hash[:20]}-{c.x}-{c.y}-{c.size}"


@dataclass
class ImportBatch:
    id: int
    subject: Subject
    paths: list[Path]
    done: int = 0
    total: int = 0
    stop: bool = False  # set on the GUI thread, read by the worker between files
    extra: dict = field(default_factory=dict)  # the page's own bookkeeping (its results rows)


class LibraryWorkers(QObject):
    thumbnail_ready = Signal(int, str, object)  # image id, thumbnail key, QIcon
    thumbnail_failed = Signal(int, str)  # image id, why (the stored file is gone or unreadable)
    cover_ready = Signal(int, object)  # subject id, QIcon
    import_progress = Signal(object, object)  # ImportBatch (done/total updated), FileResult
    import_finished = Signal(object, object, str)  # ImportBatch, ImportReport or None, error text

    # worker thread → GUI thread
    _rendered = Signal(str, int, str, object)  # "image" | "cover", id, key, Future
    _stepped = Signal(object, int, int, object)  # batch, done, total, FileResult
    _ended = Signal(object, object)  # batch, Future

    def __init__(self, library: Library, parent=None):
        super().__init__(parent)
        self.library = library
        self.batches: dict[int, ImportBatch] = {}  # running and waiting imports, oldest first
        self._import_pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-import")  # imports run in order
        self._render_pool = ThreadPoolExecutor(2, thread_name_prefix="s2s-thumbs")
        self._batch_ids = itertools.count(1)
        self._icons: dict[str, QIcon] = {}  # thumbnail file → icon
        self._thumb_paths: dict[str, str] = {}  # thumbnail key → file
        self._covers: dict[int, str] = {}  # subject id → its latest cover file
        self._closing = False
        blank = QPixmap(THUMB_PIXELS, THUMB_PIXELS)
        blank.fill(QColor("#dcdcdc"))
        self.placeholder = QIcon(blank)
        self._rendered.connect(self._on_rendered)
        self._stepped.connect(self._on_stepped)
        self._ended.connect(self._on_ended)

    def _emit(self, signal, *args) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # this object was deleted while a worker ran
            pass

    def icon(self, path: str) -> QIcon:
        if path not in self._icons:
            self._icons[path] = QIcon(QPixmap(path))
        return self._icons[path]

    # ------------------------------------------------------------------ thumbnails and covers
    def image_icon(self, record: ImageRecord) -> QIcon:
        """The cached thumbnail, or a placeholder now and ``thumbnail_ready`` when it is rendered."""
        key = thumbnail_key(record)
        path = self._thumb_paths.get(key)
        if path is not None:
            return self.icon(path)
        self._render("image", record.id, key, lambda: self.library.thumbnail(record, THUMB_PIXELS))
        return self.placeholder

    def cover_icon(self, subject_id: int) -> QIcon:
        """The last cover (or a placeholder) now; ``cover_ready`` if the first photo or its crop changed."""
        self._render("cover", subject_id, "", lambda: self.library.cover(subject_id, COVER_PIXELS))
        path = self._covers.get(subject_id)
        return self.icon(path) if path else self.placeholder

    def _render(self, kind: str, ident: int, key: str, work) -> None:
        if self._closing:
            return
        future = self._render_pool.submit(work)
        future.add_done_callback(lambda f: self._emit(self._rendered, kind, ident, key, f))

    def _on_rendered(self, kind: str, ident: int, key: str, future: Future) -> None:
        try:
            path = future.result()
        except Exception as exc:
            if kind == "image":
                self.thumbnail_failed.emit(ident, str(exc))
            return
        if kind == "image":
            self._thumb_paths[key] = str(path)
            self.thumbnail_ready.emit(ident, key, self.icon(str(path)))
        elif path is None:  # the subject has no photos left
            if self._covers.pop(ident, None) is not None:
                self.cover_ready.emit(ident, self.placeholder)
        elif self._covers.get(ident) != str(path):
            self._covers[ident] = str(path)
            self.cover_ready.emit(ident, self.icon(str(path)))

    # ------------------------------------------------------------------ imports
    def start_import(self, subject: Subject, paths, limits: ImportLimits) -> ImportBatch:
        """Queue an import; it runs after those before it. Progress and the end come as signals."""
        batch = ImportBatch(next(self._batch_ids), subject, [Path(p) for p in paths])
        self.batches[batch.id] = batch

        def work():
            return import_files(
                self.library, subject, batch.paths, limits,
                on_result=lambda done, total, result: self._emit(self._stepped, batch, done, total, result),
                should_stop=lambda: batch.stop or self._closing,
            )

        future = self._import_pool.submit(work)
        future.add_done_callback(lambda f: self._emit(self._ended, batch, f))
        return batch

    def _on_stepped(self, batch: ImportBatch, done: int, total: int, result) -> None:
        batch.done, batch.total = done, total
        self.import_progress.emit(batch, result)

    def _on_ended(self, batch: ImportBatch, future: Future) -> None:
        self.batches.pop(batch.id, None)
        try:
            report, error = future.result(), ""
        except Exception as exc:  # e.g. the subject was deleted meanwhile
            report, error = None, str(exc)
        self.import_finished.emit(batch, report, error)

    def importing_into(self, subject_id: int) -> bool:
        return any(batch.subject.id == subject_id for batch in self.batches.values())

    def stop_imports(self) -> None:
        for batch in self.batches.values():
            batch.stop = True

    def run_after_imports(self, work) -> asyncio.Future:
        """Run ``work`` on the import thread (after queued imports, never beside one); await it."""
        return asyncio.wrap_future(self._import_pool.submit(work))

    def shutdown(self) -> None:
        """Stop everything when the window closes (a running import stops after its current file)."""
        self._closing = True
        self.stop_imports()
        self._render_pool.shutdown(wait=False, cancel_futures=True)
        self._import_pool.shutdown(wait=False, cancel_futures=True)
