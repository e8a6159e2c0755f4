"""Adding the toy-world subjects (Dotty, Stripe, Smiley) to the library.

The engine renders their photos (job ``demo_subjects``, so the GUI side never imports the toy
world's code); this imports what it rendered like any user's photos.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from s2s_desktop.library.catalog import Library, LibraryError
from s2s_desktop.library.importer import ImportLimits, ImportReport, import_files


def demo_render_dir(home: Path) -> Path:
    return home / "cache" / "demo-subjects"


def import_demo_subjects(
    library: Library,
    job_result: dict,
    limits: ImportLimits | None = None,
    vocabulary: set[str] | None = None,
    on_result=None,
    should_stop=None,
) -> list[ImportReport]:
    """Create each demo subject (or reuse one with its name) and import its rendered photos."""
    reports = []
    for entry in job_result.get("subjects", []):
        subject = library.find_subject(entry["name"])
        if subject is None:
            try:
                subject = library.create_subject(entry["name"], entry["class_noun"], entry["token"], vocabulary)
            except LibraryError:  # the user took the demo token for a subject of their own
                subject = library.create_subject(entry["name"], entry["class_noun"], None, vocabulary)
        reports.append(
            import_files(library, subject, [Path(p) for p in entry["images"]], limits, on_result, should_stop)
        )
    return reports


def remove_renders(home: Path) -> None:
    """The renders were copied into the library; the cache copy is not needed any more."""
    shutil.rmtree(demo_render_dir(home), ignore_errors=True)
