"""Prompt-to-Prompt edits in the library: one catalog row per finished edit.

The row's ``params`` JSON holds everything needed to restore the edit on the Edit page: the job's
full parameters and the result's paths and facts (``{"params": {...}, "result": {...}}``). The
image files stay where the engine wrote them (the outputs folder); ``file`` is the edited PNG and
``source_file`` the picture that was edited (the input photo, or the generated original).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from s2s_desktop.library.catalog import Library, LibraryError, now

# What of an edit job's result is worth keeping (timings and cache flags are not).
KEPT_RESULT_FIELDS = (
    "original", "reconstruction", "reconstruction_psnr", "edited", "heatmaps", "mode", "notes",
    "source_words", "target_words",
)


@dataclass(frozen=True)
class Edit:
    id: int
    subject_id: int | None
    source_file: str
    params: dict  # the edit job's parameters
    result: dict  # KEPT_RESULT_FIELDS of the job's result
    file: str  # the edited PNG
    created_at: str

    @property
    def source_prompt(self) -> str:
        return str(self.params.get("source_prompt", ""))

    @property
    def target_prompt(self) -> str:
        """What the picture shows now (the source prompt when the edit only reweighted)."""
        return str(self.params.get("target_prompt") or self.source_prompt)

    def files(self) -> list[Path]:
        """The files this edit made (not the user's input photo)."""
        keys = ("original", "reconstruction", "edited", "heatmaps")
        paths = [self.result.get(key) for key in keys]
        if self.params.get("image"):  # an inverted photo: the original is the model's copy of it
            paths = [p for p in paths if p != self.params["image"]]
        return [Path(p) for p in paths if p]


def _edit(row) -> Edit:
    stored = json.loads(row["params"] or "{}")
    return Edit(
        id=row["id"], subject_id=row["subject_id"], source_file=row["source_file"],
        params=dict(stored.get("params") or {}), result=dict(stored.get("result") or {}),
        file=row["file"], created_at=row["created_at"],
    )


def record_edit(library: Library, params: dict, result: dict, subject_id: int | None = None) -> Edit:
    """Add a finished edit (one transaction). ``subject_id``: the subject whose run was applied."""
    edited = result.get("edited")
    if not edited:
        raise LibraryError("an edit without an edited image cannot be recorded")
    kept = {key: result[key] for key in KEPT_RESULT_FIELDS if key in result}
    source_file = params.get("image") or result.get("original") or ""
    with library.transaction() as conn:
        if subject_id is not None and not conn.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone():
            subject_id = None  # the subject was removed meanwhile: keep the edit, unattached
        cursor = conn.execute(
            "INSERT INTO edits (subject_id, source_file, params, file, created_at) VALUES (?, ?, ?, ?, ?)",
            (subject_id, source_file, json.dumps({"params": params, "result": kept}), edited, now()),
        )
        edit_id = cursor.lastrowid
    return get_edit(library, edit_id)


def get_edit(library: Library, edit_id: int) -> Edit:
    row = library._connection().execute("SELECT * FROM edits WHERE id = ?", (edit_id,)).fetchone()
    if row is None:
        raise LibraryError(f"there is no edit {edit_id}")
    return _edit(row)


def list_edits(library: Library, subject_id: int | None = None, limit: int | None = None) -> list[Edit]:
    """Newest first; all edits, or those of one subject."""
    sql, args = "SELECT * FROM edits", []
    if subject_id is not None:
        sql, args = sql + " WHERE subject_id = ?", [subject_id]
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql, args = sql + " LIMIT ?", [*args, int(limit)]
    return [_edit(row) for row in library._connection().execute(sql, args).fetchall()]


def delete_edit(library: Library, edit_id: int, delete_files: bool = False) -> None:
    """Remove the row; with ``delete_files`` also the images and heatmaps the edit wrote that no other
    edit uses (after the commit, so a crash leaves at worst unlisted files, never a row without its
    files)."""
    edit = get_edit(library, edit_id)
    with library.transaction() as conn:
        conn.execute("DELETE FROM edits WHERE id = ?", (edit_id,))
    if delete_files:
        still_used = {path for other in list_edits(library) for path in other.files()}  # re-renders share files
        for path in edit.files():
            if path not in still_used:
                path.unlink(missing_ok=True)
