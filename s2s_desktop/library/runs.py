"""Training runs in the library: a row per run, a folder per run under its subject, and the
training images prepared from the library's crops (the engine only reads files it is given).

Statuses: queued → running → finished | failed | cancelled (resumable: the last checkpoint is kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from s2s_desktop.library import imaging
from s2s_desktop.library.catalog import Library, LibraryError, Subject, now

RESUMABLE = ("failed", "cancelled", "running")  # "running" after a crash of the whole app


@dataclass(frozen=True)
class Run:
    id: int
    subject_id: int
    method: str
    config: dict
    status: str
    folder: Path
    model: str
    token: str
    step: int
    total_steps: int
    result: dict
    error: str
    created_at: str
    finished_at: str | None

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE and (self.folder / "checkpoints").is_dir()

    @property
    def exports_dir(self) -> Path:
        return self.folder / "exports"

    @property
    def samples_dir(self) -> Path:
        return self.folder / "samples"


def _run(library: Library, row) -> Run:
    subject = library.subject(row["subject_id"])
    return Run(
        id=row["id"], subject_id=row["subject_id"], method=row["method"], config=json.loads(row["config"]),
        status=row["status"], folder=library.subject_folder(subject) / row["folder"], model=row["model"],
        token=row["token"], step=row["step"], total_steps=row["total_steps"], result=json.loads(row["result"]),
        error=row["error"], created_at=row["created_at"], finished_at=row["finished_at"],
    )


def create_run(library: Library, subject: Subject, method: str, config: dict, model: str) -> Run:
    with library.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO runs (subject_id, method, config, status, folder, created_at, model, token, total_steps) "
            "VALUES (?, ?, ?, 'queued', '', ?, ?, ?, ?)",
            (subject.id, method, json.dumps(config), now(), model, subject.token, int(config.get("steps", 0))),
        )
        run_id = cursor.lastrowid
        conn.execute("UPDATE runs SET folder = ? WHERE id = ?", (f"runs/{run_id:04d}-{method}", run_id))
    return get_run(library, run_id)


def get_run(library: Library, run_id: int) -> Run:
    row = library._connection().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise LibraryError(f"there is no training run {run_id}")
    return _run(library, row)


def runs_of(library: Library, subject_id: int) -> list[Run]:
    rows = library._connection().execute("SELECT * FROM runs WHERE subject_id = ? ORDER BY id DESC", (subject_id,))
    return [_run(library, row) for row in rows.fetchall()]


def update_run(library: Library, run_id: int, **fields) -> Run:
    """Set status, step, result, error …; finished_at is stamped on a terminal status."""
    allowed = {"status", "step", "total_steps", "result", "error", "config"}
    if set(fields) - allowed:
        raise ValueError(f"unknown run fields {set(fields) - allowed}")
    values = {k: json.dumps(v) if k in ("result", "config") else v for k, v in fields.items()}
    if fields.get("status") in ("finished", "failed", "cancelled"):
        values["finished_at"] = now()
    assignments = ", ".join(f"{k} = ?" for k in values)
    with library.transaction() as conn:
        conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))
    return get_run(library, run_id)


def prepare_training_images(library: Library, subject_id: int, folder: Path, resolution: int) -> list[str]:
    """The subject's photos as their crops at ``resolution``², PNG, in ``folder/data`` (a run's
    folder, or the preflight's): the engine trains on exactly these; a crop change refreshes them."""
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in library.images(subject_id):
        target = data / f"{record.id:05d}.png"
        image = imaging.cropped(imaging.load_normalized(record.path), record.crop, resolution)
        imaging.save_png_atomic(image, target)
        paths.append(str(target))
    if not paths:
        raise LibraryError("the subject has no photos to train on; add some first")
    return paths


def preflight_folder(library: Library, subject_id: int) -> Path:
    """Where a preflight works: a cache folder, so a timing test adds no run to the subject's history."""
    return library.home / "cache" / "preflight" / f"subject-{subject_id}"


def class_cache_dir(library: Library) -> Path:
    """Prior-preservation class images, shared by every subject (keyed by model, prompt, size)."""
    return library.home / "cache" / "class-images"


def train_params(library: Library, subject: Subject, method: str, config: dict, folder: Path, images: list[str],
                 resume: bool = False, preflight: bool = False) -> dict:
    """The engine's ``train`` job parameters (the GUI and the CLI submit the same thing)."""
    return {
        "method": method, "token": subject.token, "class_noun": subject.class_noun, "images": images,
        "run_dir": str(folder), "class_cache_dir": str(class_cache_dir(library)), "config": config,
        "resume": resume, "preflight": preflight,
    }
