"""Galleries in the library: runs × prompts × seeds generated side by side, and their evaluations.

A gallery row points at the folder the engine wrote (``gallery.json`` + one PNG per cell); each image
is also a ``generations`` row (so "Made from this subject" lists it) and each scored column an
``evaluations`` row. Galleries of a subject live in its folder (``galleries/NNNN-…``), so backing up or
deleting the subject takes them along; a base-model-only gallery lives under the outputs folder.

Column keys name the folder of a column's images: ``base``, ``run<id>``, ``run<id>-step<n>``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine.protocol.gallery import (
    EVALUATION_NAME,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    TOY_SUBJECT_NAMES,
    image_file,
)
from engine.protocol.names import is_windows_device
from engine.protocol.training import METHOD_TITLES
from s2s_desktop.library.catalog import Library, LibraryError, Subject, now
from s2s_desktop.library.runs import Run

BASE_KEY = "base"
_RUN_KEY = re.compile(r"^run(\d+)(?:-step(\d+))?$")
PROMPT_LIST_TITLES = {
    "paper-20": "Paper: 20 scenes",
    "dreambooth-objects-25": "DreamBooth: objects (25)",
    "dreambooth-live-25": "DreamBooth: live subjects (25)",
    "toy-world": "Toy world (8)",
}


@dataclass(frozen=True)
class Gallery:
    id: int
    subject_id: int | None
    folder: Path
    title: str
    params: dict
    created_at: str

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def evaluation_path(self) -> Path:
        return self.folder / EVALUATION_NAME

    def manifest(self) -> dict:
        return read_manifest(self.folder)


# ------------------------------------------------------------------------------------ columns
def base_column(model_name: str = "") -> dict:
    return {"key": BASE_KEY, "label": f"Base model ({model_name})" if model_name else "Base model", "adapter": None}


def run_column(run: Run, scale: float = 1.0, checkpoint: Path | None = None) -> dict:
    """A finished run (or one of its checkpoints) as a gallery column."""
    if not (run.exports_dir / "run_config.json").is_file():
        raise LibraryError(f"run {run.id} has not finished training (no exports yet); resume it first")
    label = f"#{run.id} {METHOD_TITLES.get(run.method, run.method)}"
    key = f"run{run.id}"
    adapter: dict = {"folder": str(run.exports_dir), "scale": float(scale)}
    if checkpoint is not None:
        step = int(Path(checkpoint).name.split("-")[-1])
        key, label = f"{key}-step{step}", f"{label} @ step {step}"
        adapter["checkpoint"] = str(checkpoint)
    elif run.method in ("lora", "pivotal") and scale != 1.0:
        label += f" ×{scale:g}"
    return {"key": key, "label": label, "adapter": adapter}


def checkpoint_columns(run: Run) -> list[dict]:
    """Every complete checkpoint the run kept, oldest first (for "which step is best?")."""
    folder = run.folder / "checkpoints"
    steps = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file()) if folder.is_dir() else []
    return [run_column(run, checkpoint=p) for p in steps]


def toy_subject_for(subject: Subject | None, model_source: str) -> str:
    """The toy-world subject the toy evaluator can score ("" when the model is not the toy world or
    the subject is not one of its demo subjects)."""
    from s2s_desktop.demo import toy_model_path

    if subject is None or not model_source:
        return ""
    try:
        is_toy = Path(model_source).resolve() == toy_model_path().resolve()
    except OSError:
        is_toy = False
    names = {name.lower(): name for name in TOY_SUBJECT_NAMES}
    return names.get(subject.name.lower(), "") if is_toy else ""


def feature_sources_for(stored: dict | None, model_source: str) -> dict[str, str]:
    """The feature models an evaluation asks for: the user's settings, and for a toy-world gallery
    with no CLIP chosen, the toy CLIP shipped beside the toy model (trained on the same world;
    the table names it, so it is never mistaken for OpenAI's)."""
    from s2s_desktop.demo import resources_dir, toy_model_path

    sources = {k: v for k, v in (stored or {}).items() if v}
    toy_clip = resources_dir() / "toy-clip"
    try:
        is_toy = bool(model_source) and Path(model_source).resolve() == toy_model_path().resolve()
    except OSError:
        is_toy = False
    if is_toy and "clip" not in sources and (toy_clip / "config.json").is_file():
        sources["clip"] = str(toy_clip)
    return sources


def default_prompt_list(model_source: str) -> str:
    from s2s_desktop.demo import toy_model_path

    try:
        return "toy-world" if Path(model_source).resolve() == toy_model_path().resolve() else "paper-20"
    except OSError:
        return "paper-20"


def column_run_id(key: str) -> int | None:
    match = _RUN_KEY.match(key)
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------ prompt lists
def prompt_lists(home: Path | None = None) -> dict[str, Path]:
    """Shipped lists, then the user's saved ones (``<home>/prompt-lists/*.txt``) by name."""
    from s2s_desktop.demo import resources_dir

    lists = {name: resources_dir() / "prompts" / f"{name}.txt" for name in PROMPT_LIST_TITLES}
    if home is not None and (home / "prompt-lists").is_dir():
        for path in sorted((home / "prompt-lists").glob("*.txt")):
            lists[path.stem] = path
    return lists


def read_prompt_list(path: Path) -> list[str]:
    """One template per line; blank lines and ``#`` comments skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def save_prompt_list(home: Path, name: str, prompts: list[str]) -> Path:
    from s2s_desktop.settings import atomic_write_text

    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:60]
    if not slug:
        raise LibraryError("a prompt list needs a name with letters or digits")
    if is_windows_device(slug):  # "CON.txt" is the console on Windows: the list would be lost
        raise LibraryError(f"{slug!r} is a device name on Windows; save the list under another name")
    if slug in PROMPT_LIST_TITLES:
        raise LibraryError(f"{slug!r} is a shipped list; save yours under another name")
    path = home / "prompt-lists" / f"{slug}.txt"
    atomic_write_text(path, "\n".join(p.strip() for p in prompts if p.strip()) + "\n")
    return path


def parse_seeds(text: str) -> list[int]:
    """"0-3", "1,5,9", "0-3,10" → a list without repeats, in order."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low or high - low > 1000:
                    raise ValueError
                values = range(low, high + 1)
            else:
                values = [int(part)]
        except ValueError:
            raise LibraryError(f"seeds are numbers or ranges like 0-3,10; {part!r} is not") from None
        seeds += [v for v in values if v not in seeds]
    if not seeds or any(v < 0 or v >= 2**32 for v in seeds):
        raise LibraryError("give at least one seed from 0 to 4294967295")
    return seeds


# ------------------------------------------------------------------------------------ galleries
def new_gallery_folder(library: Library, subject: Subject | None, outputs: Path) -> Path:
    """A fresh folder for a gallery job's out_dir (not created: the engine writes it)."""
    root = library.subject_folder(subject) / "galleries" if subject is not None else outputs / "galleries"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = root / stamp, 1
    while candidate.exists():
        candidate, n = root / f"{stamp}-{n}", n + 1
    return candidate


def read_manifest(folder: Path) -> dict:
    path = Path(folder)
    path = path if path.name == MANIFEST_NAME else path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LibraryError(f"{path} is not a readable gallery ({exc})") from None
    if manifest.get("version", 0) > MANIFEST_VERSION:
        raise LibraryError(f"{path} was written by a newer Subject2Subject; update the app")
    return manifest


def _gallery(row) -> Gallery:
    return Gallery(
        id=row["id"], subject_id=row["subject_id"], folder=Path(row["folder"]), title=row["title"],
        params=json.loads(row["params"] or "{}"), created_at=row["created_at"],
    )


def record_gallery(library: Library, subject_id: int | None, params: dict, title: str = "") -> Gallery:
    """A finished gallery job: one galleries row and a generations row per image (one transaction)."""
    folder = Path(params["out_dir"])
    manifest = read_manifest(folder)
    if not manifest.get("complete", True):
        _drop_unlisted_images(folder, manifest)
    labels = {c["key"]: c.get("label", c["key"]) for c in manifest.get("columns", [])}
    model = manifest.get("settings", {}).get("model", "")
    if not title:
        prompts = manifest.get("prompts", [])
        title = f"{len(labels)} column(s) × {len(prompts)} prompt(s) × {len(manifest.get('seeds', []))} seed(s)"
    with library.transaction() as conn:
        if subject_id is not None and not conn.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone():
            subject_id = None
        cursor = conn.execute(
            "INSERT INTO galleries (subject_id, folder, title, params, created_at) VALUES (?, ?, ?, ?, ?)",
            (subject_id, str(folder), title, json.dumps(params), now()),
        )
        gallery_id = cursor.lastrowid
        known_runs = {row[0] for row in conn.execute("SELECT id FROM runs")}
        for image in manifest.get("images", []):
            run_id = column_run_id(image["column"])
            extra = {"column": image["column"], "label": labels.get(image["column"], ""), "row": image["row"],
                     "kind": image.get("kind", "subject")}
            conn.execute(
                "INSERT INTO generations (subject_id, run_id, prompt, seed, model, params, file, created_at, gallery_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subject_id, run_id if run_id in known_runs else None, image["prompt"], image["seed"], model,
                 json.dumps(extra), str(folder / image["file"]), now(), gallery_id),
            )
    return get_gallery(library, gallery_id)


def _drop_unlisted_images(folder: Path, manifest: dict) -> None:
    """A gallery job that died between saving a batch and listing it in the manifest leaves cell PNGs
    the manifest does not name (and temp files of a write cut short); the library keeps exactly what
    the manifest lists. Only names this gallery's own cells would have are touched: the folder may be
    one the user chose, holding pictures of their own."""
    listed = {image["file"] for image in manifest.get("images", [])}
    rows = list(range(len(manifest.get("prompts", [])))) + ([-1] if manifest.get("prior_prompt") else [])
    for column in manifest.get("columns", []):
        for row in rows:
            for seed in manifest.get("seeds", []):
                cell = image_file(column["key"], row, seed)
                if cell not in listed:
                    (folder / cell).unlink(missing_ok=True)
                for stale in (folder / cell).parent.glob(f".{Path(cell).name}.*.tmp"):  # engine.generate's temp
                    stale.unlink(missing_ok=True)


def get_gallery(library: Library, gallery_id: int) -> Gallery:
    row = library._connection().execute("SELECT * FROM galleries WHERE id = ?", (gallery_id,)).fetchone()
    if row is None:
        raise LibraryError(f"there is no gallery {gallery_id}")
    return _gallery(row)


def list_galleries(library: Library, subject_id: int | None = None) -> list[Gallery]:
    """Newest first; every gallery, or one subject's."""
    sql, args = "SELECT * FROM galleries", []
    if subject_id is not None:
        sql, args = sql + " WHERE subject_id = ?", [subject_id]
    return [_gallery(row) for row in library._connection().execute(sql + " ORDER BY id DESC", args).fetchall()]


def delete_gallery(library: Library, gallery_id: int, delete_files: bool = False) -> None:
    """Rows first (one transaction: images and scores go with it), then the folder if asked."""
    gallery = get_gallery(library, gallery_id)
    with library.transaction() as conn:
        conn.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))
    if delete_files and (gallery.folder / MANIFEST_NAME).is_file():
        shutil.rmtree(gallery.folder, ignore_errors=True)


# ------------------------------------------------------------------------------------ evaluations
def record_evaluation(library: Library, gallery_id: int, evaluation: dict) -> list[int]:
    """One evaluations row per column of an ``evaluate`` job's result; replaces the gallery's
    earlier scores (re-evaluating with another feature model is the common case)."""
    gallery = get_gallery(library, gallery_id)
    meta = evaluation.get("metrics", [])
    ids = []
    with library.transaction() as conn:
        conn.execute("DELETE FROM evaluations WHERE gallery_id = ?", (gallery_id,))
        known_runs = {row[0] for row in conn.execute("SELECT id FROM runs")}
        for row in evaluation.get("rows", []):
            run_id = column_run_id(row["column"])
            payload = {"scores": row.get("scores", {}), "metrics": meta, "best": evaluation.get("best"),
                       "file": evaluation.get("file", "")}
            cursor = conn.execute(
                "INSERT INTO evaluations (subject_id, run_id, metrics, created_at, gallery_id, column_key, label)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gallery.subject_id, run_id if run_id in known_runs else None, json.dumps(payload), now(), gallery_id,
                 row["column"], row.get("label", "")),
            )
            ids.append(cursor.lastrowid)
    return ids


def evaluation_of(library: Library, gallery_id: int) -> dict | None:
    """The gallery's stored scores in the evaluate job's result layout, or None if never scored."""
    rows = library._connection().execute(
        "SELECT * FROM evaluations WHERE gallery_id = ? ORDER BY id", (gallery_id,)
    ).fetchall()
    if not rows:
        return None
    first = json.loads(rows[0]["metrics"])
    return {
        "metrics": first.get("metrics", []),
        "best": first.get("best"),
        "file": first.get("file", ""),
        "rows": [{"column": r["column_key"], "label": r["label"], "scores": json.loads(r["metrics"]).get("scores", {})}
                 for r in rows],
        "created_at": rows[0]["created_at"],
    }
