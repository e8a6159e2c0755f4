"""Is the library whole? The catalog against the files beside it, in both directions (Qt-free).

``problems(library)`` is empty when SQLite's own check passes, every row's files exist and no file
in the library's folders is unaccounted for. The fault suite runs it after every fault; the
app runs :func:`recover` at start, which removes what an interrupted import left, and keeps what
an interrupted gallery made by recording it as a partial gallery.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from s2s_desktop.library.catalog import SUBJECT_FOLDER, Library, LibraryError

log = logging.getLogger("s2s.library")

# Files the app writes beside the catalog that no row names: SQLite's WAL/journal, caches, logs …
CATALOG_SIDE_FILES = ("-wal", "-shm", "-journal")


def problems(library: Library) -> list[str]:
    found = library.integrity_problems()  # PRAGMA integrity_check, foreign keys, image files
    found += _missing_files(library)
    found += [f"orphan file {path}" for path in orphans(library)]
    return found


def _missing_files(library: Library) -> list[str]:
    conn = library._connection()
    found = []
    folders = {row["id"]: row["folder"] for row in conn.execute("SELECT id, folder FROM subjects")}
    for row in conn.execute("SELECT id, subject_id, status, folder, step, result FROM runs"):
        folder = library.subjects_dir / folders[row["subject_id"]] / row["folder"]
        if row["status"] == "finished":
            result = json.loads(row["result"] or "{}")
            found += [f"run #{row['id']}: missing export {item['path']}" for item in result.get("exports", [])
                      if not Path(item["path"]).exists()]
        if (row["step"] or 0) > 0 and not folder.is_dir():
            found.append(f"run #{row['id']}: its folder {folder} is gone but the catalog says step {row['step']}")
    for row in conn.execute("SELECT id, folder FROM galleries"):
        if not (Path(row["folder"]) / "gallery.json").is_file():
            found.append(f"gallery #{row['id']}: missing {row['folder']}/gallery.json")
    for row in conn.execute("SELECT id, file FROM generations WHERE gallery_id IS NOT NULL"):
        if not Path(row["file"]).is_file():
            found.append(f"generation #{row['id']}: missing {row['file']}")
    for row in conn.execute("SELECT id, file FROM edits"):
        if row["file"] and not Path(row["file"]).is_file():
            found.append(f"edit #{row['id']}: missing {row['file']}")
    return found


def orphans(library: Library) -> list[Path]:
    """Files and folders under ``subjects/`` that no row accounts for (the thumbnail cache and the
    class-image cache are outside it and rebuilt on demand)."""
    if not library.subjects_dir.is_dir():
        return []
    conn = library._connection()
    folders = {row["folder"]: row["id"] for row in conn.execute("SELECT id, folder FROM subjects")}
    images = {(row[0], row[1]) for row in conn.execute("SELECT subject_id, file FROM images")}
    run_folders = {(row[0], row[1]) for row in conn.execute("SELECT subject_id, folder FROM runs")}
    gallery_folders = {str(Path(row[0])) for row in conn.execute("SELECT folder FROM galleries")}
    found: list[Path] = []
    for entry in sorted(library.subjects_dir.iterdir()):
        if entry.name not in folders:
            found.append(entry)
            continue
        subject_id = folders[entry.name]
        for child in sorted(entry.iterdir()):
            if child.name == "images" and child.is_dir():
                found += [f for f in sorted(child.iterdir()) if (subject_id, f"images/{f.name}") not in images]
            elif child.name == "runs" and child.is_dir():
                found += [f for f in sorted(child.iterdir()) if (subject_id, f"runs/{f.name}") not in run_folders]
            elif child.name == "galleries" and child.is_dir():
                found += [f for f in sorted(child.iterdir()) if str(f) not in gallery_folders]
    return found


def recover(library: Library) -> dict[str, list]:
    """What the app does at start after a crash of the GUI or the engine: remove import leftovers
    (files with no row), record interrupted galleries from their manifests (the images they made
    are kept), and remove gallery folders without one (the job died before its first image)."""
    removed = library.clean_orphans()
    adopted, dropped = [], []
    for folder in [p for p in orphans(library) if p.parent.name == "galleries"]:
        subject_id = _subject_of(library, folder)
        try:
            gallery = adopt_gallery(library, subject_id, folder)
            adopted.append(gallery.id)
            log.info("recorded the interrupted gallery %s as #%s", folder, gallery.id)
        except LibraryError:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            dropped.append(folder)
    return {"removed": removed, "adopted_galleries": adopted, "dropped_galleries": dropped}


def _subject_of(library: Library, gallery_folder: Path) -> int | None:
    subject_folder = gallery_folder.parent.parent.name
    if not SUBJECT_FOLDER.match(subject_folder):
        return None
    row = library._connection().execute("SELECT id FROM subjects WHERE folder = ?", (subject_folder,)).fetchone()
    return row[0] if row else None


def adopt_gallery(library: Library, subject_id: int | None, folder: Path):
    """Record a gallery folder the GUI never recorded (it was closed or killed while the job ran)."""
    from s2s_desktop.library import galleries

    manifest = galleries.read_manifest(folder)
    params = {"out_dir": str(folder), "columns": manifest.get("columns", []), "prompts": manifest.get("prompts", []),
              "seeds": manifest.get("seeds", []), **manifest.get("settings", {})}
    title = "interrupted: " + (f"{len(params['columns'])} column(s) × {len(params['prompts'])} prompt(s)")
    return galleries.record_gallery(library, subject_id, params, title)
