"""Importing a batch of photos into a subject: every file gets a result, bad files never stop the rest."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s2s_desktop.library import imaging
from s2s_desktop.library.catalog import ImageRecord, Library, Subject

FEW_PHOTOS = 4
MANY_PHOTOS = 30


@dataclass
class FileResult:
    path: str
    status: str  # imported | duplicate | refused
    reason: str = ""  # why it was refused, or what was done to it
    code: str = ""  # machine-readable: empty, too_small, corrupt, not_image, duplicate …
    warning: str = ""  # imported, but worth a look (near-duplicate)
    image_id: int | None = None

    @property
    def imported(self) -> bool:
        return self.status == "imported"


@dataclass
class ImportReport:
    subject: str
    results: list[FileResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the whole subject
    cancelled: bool = False

    @property
    def imported(self) -> list[FileResult]:
        return [r for r in self.results if r.imported]

    @property
    def not_imported(self) -> list[FileResult]:
        return [r for r in self.results if not r.imported]

    def to_json(self) -> dict:
        return {
            "subject": self.subject,
            "imported": len(self.imported),
            "not_imported": len(self.not_imported),
            "cancelled": self.cancelled,
            "warnings": self.warnings,
            "files": [asdict(r) for r in self.results],
        }


@dataclass
class ImportLimits:
    min_short_side: int = imaging.DEFAULT_MIN_SHORT_SIDE
    max_megapixels: float = imaging.DEFAULT_MAX_MEGAPIXELS


def import_files(
    library: Library,
    subject: Subject,
    paths,
    limits: ImportLimits | None = None,
    on_result: Callable[[int, int, FileResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportReport:
    """Import ``paths`` (files or folders) into ``subject``. Safe to run off the GUI thread: it uses
    its own catalog connection. ``on_result(done, total, result)`` is called after every file;
    ``should_stop()`` is checked between files (what was imported stays)."""
    limits = limits or ImportLimits()
    files = imaging.expand_paths(paths)
    report = ImportReport(subject=subject.name)
    existing = library.images(subject.id)
    hashes = [(r.dhash, r.source_name) for r in existing if r.dhash is not None]
    for index, path in enumerate(files):
        if should_stop and should_stop():
            report.cancelled = True
            break
        result = _import_one(library, subject, path, limits, hashes)
        report.results.append(result)
        if on_result:
            on_result(index + 1, len(files), result)
        if result.code == "subject_gone":
            return report
    report.warnings = count_warnings(len(library.images(subject.id)))
    return report


def _import_one(
    library: Library, subject: Subject, path: Path, limits: ImportLimits, hashes: list[tuple[int, str]]
) -> FileResult:
    try:
        normalized = imaging.open_checked(
            path, max_megapixels=limits.max_megapixels, min_short_side=limits.min_short_side
        )
    except imaging.ImageRefused as refusal:
        return FileResult(str(path), "refused", refusal.reason, refusal.code)
    pixel_hash = imaging.pixel_hash(normalized.image)
    twin = library.find_by_hash(subject.id, pixel_hash)
    if twin is not None:
        return FileResult(
            str(path), "duplicate", f"the same pixels as {twin.source_name}, already in {subject.name}",
            "duplicate", image_id=twin.id,
        )
    dhash = imaging.difference_hash(normalized.image)
    near = [name for other, name in hashes if imaging.hamming(other, dhash) <= imaging.NEAR_DUPLICATE_BITS]
    try:
        record: ImageRecord = library.add_image_file(subject, Path(path), normalized, pixel_hash, dhash)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _disk_full(library, path)
        return FileResult(str(path), "refused", f"could not copy it into the library ({exc})", "io_error")
    except sqlite3.IntegrityError:  # the subject was deleted (another window, the CLI) mid-import
        return FileResult(str(path), "refused", f"{subject.name} was deleted during the import", "subject_gone")
    except sqlite3.OperationalError as exc:
        # the copy fitted but the catalog's journal did not (SQLITE_FULL); the copy was removed
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_FULL" and "full" not in str(exc):
            raise
        return _disk_full(library, path)
    hashes.append((dhash, record.source_name))
    warning = f"looks almost the same as {near[0]}; near-identical photos teach little" if near else ""
    return FileResult(
        str(path), "imported", "; ".join(normalized.conversions), "", warning=warning, image_id=record.id
    )


def _disk_full(library: Library, path: Path) -> FileResult:
    return FileResult(
        str(path), "refused",
        f"the disk is full: there was no room to copy it into the library ({library.home}); nothing was "
        "half-written. Free some space on that disk, then add it again", "disk_full",
    )


def count_warnings(count: int) -> list[str]:
    if count == 0:
        return []
    if count < FEW_PHOTOS:
        return [
            f"only {count} photo{'s' if count != 1 else ''}: {FEW_PHOTOS} or more (ideally 5-20, different "
            "angles and backgrounds) let the model tell the subject from its surroundings"
        ]
    if count > MANY_PHOTOS:
        return [
            f"{count} photos: more than {MANY_PHOTOS} makes training slower and rarely better; consider "
            "keeping the best 20"
        ]
    return []
