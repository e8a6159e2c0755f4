"""The insertion evaluation from the app's side (Qt-free, no torch): which runs, which source
pictures, where the results go, and the ``evaluate_insertion`` job's parameters. ``s2s evaluate
--insertion`` and the Evaluate page's "Putting the subject in" build their jobs here.

Results live in the subject's folder (``insertion/<time stamp>/insertion.json`` with the edits
beside it), so the page shows the latest one again and backing up the subject keeps them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine import protocol
from engine.protocol.editing import INSERTION_DEFAULTS
from engine.protocol.insertion import INSERTION_NAME, default_source_prompts
from s2s_desktop.image_meta import parse_parameters, read_parameters
from s2s_desktop.library.catalog import Library, LibraryError, Subject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FOLDER = "insertion"


class InsertionSetupError(ValueError):
    """A setup the job cannot run (the message says what to change)."""


def is_toy_model(model_source: str) -> bool:
    from s2s_desktop.demo import toy_model_path

    try:
        return bool(model_source) and Path(model_source).resolve() == toy_model_path().resolve()
    except OSError:
        return False


def default_prompts(subject: Subject, model_source: str) -> list[str]:
    return default_source_prompts(subject.class_noun, is_toy_model(model_source))


def run_columns(library: Library, subject: Subject, run_ids: list[int], scale: float | None = None) -> list[dict]:
    """The finished runs as the job's ``runs`` (gallery columns: key, label, adapter); LoRA runs at
    the measured insertion strength unless ``scale`` says otherwise."""
    from s2s_desktop.library import galleries
    from s2s_desktop.library import runs as library_runs

    if not run_ids:
        raise InsertionSetupError("choose at least one finished run of the subject")
    columns = []
    for run_id in dict.fromkeys(run_ids):
        try:
            run = library_runs.get_run(library, run_id)
            if run.subject_id != subject.id:
                raise InsertionSetupError(f"run {run_id} belongs to another subject")
            strength = scale if scale is not None else (
                INSERTION_DEFAULTS["lora_scale"] if run.method in ("lora", "pivotal") else 1.0)
            columns.append(galleries.run_column(run, strength))
        except LibraryError as exc:
            raise InsertionSetupError(str(exc)) from None
    return columns


def run_token(columns: list[dict], subject: Subject) -> str:
    """The word the runs learned (the subject's token may have been renamed since)."""
    for column in columns:
        try:
            summary = json.loads((Path(column["adapter"]["folder"]) / "run_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if summary.get("token"):
            return str(summary["token"])
    return subject.token


def seed_sources(prompts: list[str], seeds: list[int]) -> list[dict]:
    """Generated source pictures: every prompt with every seed."""
    prompts = [" ".join(p.split()) for p in prompts if p.strip()]
    if not prompts:
        raise InsertionSetupError("give at least one source prompt")
    return [{"prompt": p, "seed": s} for p in prompts for s in seeds]


def folder_sources(folder: str | Path, prompt: str = "") -> list[dict]:
    """A folder's pictures as sources, each inverted: with the prompt a PNG of this app carries,
    else ``prompt`` (what the pictures show)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InsertionSetupError(f"{folder}: not a folder")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith(".")), key=lambda p: p.name.lower())
    if not files:
        raise InsertionSetupError(f"{folder}: no PNG, JPEG or WebP pictures in it")
    sources = []
    for path in files:
        own = parse_parameters(read_parameters(path)).get("prompt", "").strip() if path.suffix.lower() == ".png" else ""
        text = own or prompt.strip()
        if not text:
            raise InsertionSetupError(f"{path.name} carries no prompt of this app: give the prompt that describes "
                                      "the pictures")
        sources.append({"prompt": " ".join(text.split()), "image": str(path.resolve())})
    return sources


def new_folder(library: Library, subject: Subject) -> Path:
    """A fresh results folder in the subject's folder (the engine creates it)."""
    root = library.subject_folder(subject) / FOLDER
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = root / stamp, 1
    while candidate.exists():
        candidate, n = root / f"{stamp}-{n}", n + 1
    return candidate


def latest(library: Library, subject: Subject) -> tuple[Path, dict] | None:
    """The subject's newest insertion evaluation (its folder and contents), or None."""
    try:
        root = library.subject_folder(subject) / FOLDER
    except LibraryError:
        return None
    for path in sorted(root.glob(f"*/{INSERTION_NAME}"), reverse=True):
        try:
            return path.parent, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def job_params(*, subject: Subject, columns: list[dict], sources: list[dict], out_dir: Path, into: str = "",
               real_images: list[str] | None = None, feature_models: dict | None = None, toy_subject: str = "",
               metrics: list[str] | None = None, steps: int = 50, guidance: float = 7.5) -> dict:
    """The job's parameters, checked by the protocol's own validator."""
    params = {
        "token": run_token(columns, subject), "class_noun": subject.class_noun, "runs": columns, "sources": sources,
        "into": into, "real_images": real_images or None, "metrics": metrics or None,
        "feature_models": feature_models or None, "toy_subject": toy_subject, "steps": steps,
        "guidance": guidance, "out_dir": str(out_dir),
    }
    try:
        return protocol.validate_job("evaluate_insertion", params)
    except protocol.ProtocolError as exc:
        raise InsertionSetupError(exc.message) from None
