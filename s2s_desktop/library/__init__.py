"""The subject library (no Qt, no torch): a SQLite catalog of subjects, their photos and everything
made from them, with the photo files beside it. See :mod:`s2s_desktop.library.catalog`."""

from s2s_desktop.library.catalog import ImageRecord, Library, LibraryError, Subject
from s2s_desktop.library.imaging import Crop, ImageRefused
from s2s_desktop.library.importer import FileResult, ImportLimits, ImportReport, import_files

__all__ = [
    "Crop",
    "FileResult",
    "ImageRecord",
    "ImageRefused",
    "ImportLimits",
    "ImportReport",
    "Library",
    "LibraryError",
    "Subject",
    "import_files",
]
