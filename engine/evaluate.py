"""Scoring a gallery: one row per column (base model, run, checkpoint), one score per metric.

The metric maths and the feature models live in ``engine.metrics`` (torchmetrics, transformers); the
toy-world scores in ``engine.toy``. This module decides which images each metric sees, states the
sample count beside every number, warns where the count is too small to mean anything, says
"not available" with the reason where a feature model is missing (never a number from another
model), and recommends the column that is best on subject and prompt fidelity together.

Which images:
    CLIP-T          the column's subject-prompt images, each with its prompt *without* the new
                    word (CLIP cannot read it; the DreamBooth protocol does the same)
    CLIP-I, DINO    the column's subject-prompt images × the subject's photos
    PRES            the column's class-prompt images (gallery ``prior_prompt``) × the photos
    DIV             pairs of images of the same prompt with different seeds
    FID, IS         the column's subject-prompt images (FID against the photos)
    toy scores      the toy evaluator on every subject-prompt image
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.jobs import JobContext, JobFailed
from engine.protocol.gallery import (
    EVALUATION_NAME,
    MANIFEST_NAME,
    METRICS,
    MIN_IMAGES_FID,
    MIN_IMAGES_IS,
    fill_template,
)

# Subject fidelity and prompt fidelity, each the first of these that was measured.
SUBJECT_FIDELITY = ("dino", "clip_i", "toy_match")
PROMPT_FIDELITY = ("clip_t", "toy_prompt")
EVALUATION_VERSION = 1


def load_manifest(path: str) -> tuple[Path, dict]:
    location = Path(path)
    folder = location.parent if location.name == MANIFEST_NAME else location
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFailed(f"{folder} is not a gallery ({exc})", "generate a gallery first, then evaluate it",
                        code="not_found") from None
    return folder, manifest


def _open_images(paths: list[Path], what: str) -> list:
    from PIL import Image

    images, missing = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError):
            missing.append(str(path))
    if missing:
        raise JobFailed(f"{len(missing)} {what} could not be read, e.g. {missing[0]}",
                        "regenerate the gallery, or remove the broken photos from the subject", code="not_found")
    return images


class _Column:
    """One column's images, grouped the ways the metrics need them."""

    def __init__(self, folder: Path, manifest: dict, column: dict):
        self.key, self.label = column["key"], column.get("label") or column["key"]
        cells = [c for c in manifest["images"] if c["column"] == self.key]
        self.subject_cells = [c for c in cells if c.get("kind", "subject") == "subject"]
        self.prior_cells = [c for c in cells if c.get("kind") == "prior"]
        self.folder = folder
        self._images: dict[str, object] = {}
        templates = manifest.get("prompts", [])
        # the prompt as CLIP and the toy evaluator read it: without the new word
        self.plain_prompts = [
            fill_template(templates[c["row"]], "", manifest.get("class_noun", "")) if 0 <= c["row"] < len(templates)
            else c["prompt"] for c in self.subject_cells
        ]

    def images(self, cells: list[dict]) -> list:
        todo = [c for c in cells if c["file"] not in self._images]
        for cell, image in zip(todo, _open_images([self.folder / c["file"] for c in todo], "gallery images"),
                               strict=True):
            self._images[cell["file"]] = image
        return [self._images[c["file"]] for c in cells]

    def same_prompt_groups(self) -> list[list]:
        rows: dict[int, list[dict]] = {}
        for cell in self.subject_cells:
            rows.setdefault(cell["row"], []).append(cell)
        return [self.images(group) for group in rows.values() if len(group) >= 2]


def _score(value: float, n: int, warning: str = "") -> dict:
    out = {"value": round(float(value), 4), "n": n}
    if warning:
        out["warning"] = warning
    return out


def _unavailable(reason: str) -> dict:
    return {"value": None, "unavailable": reason}


def compute_metric(name: str, column: _Column, real: list, features, toy_subject) -> dict:
    """One metric for one column; raises engine.metrics.Unavailable for a missing feature model."""
    subject_images = column.images(column.subject_cells)
    if not subject_images and name != "pres":
        return _unavailable("this column has no subject-prompt images")
    if name.startswith("toy_"):
        return _toy_metric(name, column, subject_images, toy_subject)
    from engine import metrics

    if name in ("clip_i", "dino", "pres", "fid") and not real:
        return _unavailable("the subject has no photos to compare with")
    if name == "clip_t":
        return _score(metrics.clip_t(features.clip(), subject_images, column.plain_prompts), len(subject_images))
    if name == "clip_i":
        return _score(metrics.clip_i(features.clip(), subject_images, real), len(subject_images))
    if name == "dino":
        return _score(metrics.dino_similarity(features.dino(), subject_images, real), len(subject_images))
    if name == "pres":
        if not column.prior_cells:
            return _unavailable("the gallery has no class-prompt images: generate it with the class prompt on")
        prior = column.images(column.prior_cells)
        return _score(metrics.dino_similarity(features.dino(), prior, real), len(prior))
    if name == "div":
        groups = column.same_prompt_groups()
        if not groups:
            return _unavailable("needs at least two seeds per prompt")
        return _score(metrics.lpips_diversity(features.lpips(), groups), sum(len(g) for g in groups))
    if name == "fid":
        n, m = len(subject_images), len(real)
        if n < 2 or m < 2:
            return _unavailable(f"FID needs at least 2 generated and 2 real images (has {n} and {m})")
        warning = ""
        if min(n, m) < MIN_IMAGES_FID:
            warning = (f"computed on {n} generated and {m} real images; below {MIN_IMAGES_FID} FID is dominated "
                       "by sampling noise (the research this app grew from used 18)")
        return _score(metrics.fid(features.inception(), subject_images, real), n, warning)
    if name == "is":
        n = len(subject_images)
        mean, std = metrics.inception_score(features.inception(), subject_images)
        warning = f"computed on {n} images; below {MIN_IMAGES_IS} the score is unreliable" if n < MIN_IMAGES_IS else ""
        out = _score(mean, n, warning)
        out["std"] = round(float(std), 4)
        return out
    raise ValueError(name)


def _toy_metric(name: str, column: _Column, images: list, toy_subject) -> dict:
    import numpy as np

    from engine.toy.evaluator import analyse
    from engine.toy.scoring import score_caption, subject_present

    if toy_subject is None:
        return _unavailable("the toy-world scores apply only to a toy-world subject (Dotty, Stripe, Smiley)")
    analyses = [analyse(np.asarray(image)) for image in images]
    if name == "toy_prompt":
        scores = [score_caption(a, prompt) for a, prompt in zip(analyses, column.plain_prompts, strict=True)]
        ok = [bool(s.get("objects_ok")) and s.get("background_ok") is not False for s in scores]
        return _score(float(np.mean(ok)), len(ok))
    present = [subject_present(a, toy_subject) for a in analyses]
    if name == "toy_subject":
        return _score(float(np.mean([p[0] for p in present])), len(present))
    return _score(float(np.mean([p[1] for p in present])), len(present))


def _short(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def recommend(rows: list[dict], base_key: str = "base") -> dict | None:
    """The column best on subject and prompt fidelity together: each measure is scaled to 0..1 across
    the columns compared (min-max) and the two are averaged; ties go to the earlier column (a
    checkpoint gallery lists steps in order, so the earlier of two equal checkpoints wins)."""
    candidates = [r for r in rows if r["column"] != base_key] or rows
    picked = []
    for family in (SUBJECT_FIDELITY, PROMPT_FIDELITY):
        for name in family:
            values = [r["scores"].get(name, {}).get("value") for r in candidates]
            if all(v is not None for v in values):
                picked.append(name)
                break
    if not picked or len(candidates) < 1:
        return None

    def scaled(name: str, row: dict) -> float:
        values = [r["scores"][name]["value"] for r in candidates]
        low, high = min(values), max(values)
        if high == low:
            return 0.5
        unit = (row["scores"][name]["value"] - low) / (high - low)
        return unit if METRICS[name]["higher_is_better"] else 1.0 - unit

    best = max(candidates, key=lambda r: (sum(scaled(n, r) for n in picked), -candidates.index(r)))
    shown = ", ".join(f"{METRICS[n]['title']} {_short(best['scores'][n]['value'])}" for n in picked)
    kinds = " and ".join(("subject fidelity" if n in SUBJECT_FIDELITY else "prompt fidelity") for n in picked)
    return {"column": best["column"], "label": best["label"], "by": picked,
            "reason": f"best {kinds} together ({shown})"}


def run_evaluate_job(params: dict, ctx: JobContext, state) -> dict:
    from engine import devices
    from engine.metrics import FeatureModels, Unavailable
    from engine.toy.subjects import get_subject

    started = time.perf_counter()
    folder, manifest = load_manifest(params["gallery"])
    names = params["metrics"] or list(METRICS)
    toy_subject = None
    if params["toy_subject"]:
        try:
            toy_subject = get_subject(params["toy_subject"])
        except KeyError as exc:
            raise JobFailed(str(exc), "toy scores exist only for the toy world's demo subjects", code="invalid_params") from None
    real = _open_images([Path(p) for p in params["real_images"] or []], "subject photos")
    device = devices.select_device(state.device_preference)
    features = FeatureModels(dict(params["feature_models"] or {}), device=device)  # loads each model on first use
    columns = [_Column(folder, manifest, c) for c in manifest.get("columns", [])]
    rows = [{"column": c.key, "label": c.label, "scores": {}} for c in columns]
    unavailable: dict[str, str] = {}
    total = len(names) * len(columns)
    done = 0
    ctx.progress(0, total, force=True)
    for name in names:
        for column, row in zip(columns, rows, strict=True):
            if name in unavailable:
                row["scores"][name] = _unavailable(unavailable[name])
            else:
                try:
                    row["scores"][name] = compute_metric(name, column, real, features, toy_subject)
                except Unavailable as exc:
                    unavailable[name] = exc.reason
                    row["scores"][name] = _unavailable(exc.reason)
            done += 1
            ctx.progress(done, total, metric=name, column=column.key)
    meta = []
    for name in names:
        info = METRICS[name]
        model = "toy evaluator" if info["model"] == "toy" else (
            "" if name in unavailable else features.describe(info["model"]))
        meta.append({"name": name, "title": info["title"], "higher_is_better": info["higher_is_better"],
                     "model": model, "note": info["note"]})
    evaluation = {
        "version": EVALUATION_VERSION,
        "gallery": str(folder / MANIFEST_NAME),
        "complete": bool(manifest.get("complete", True)),
        "real_images": len(real),
        "metrics": meta,
        "rows": rows,
        "best": recommend(rows),
    }
    out = Path(params["out"]) if params["out"] else folder / EVALUATION_NAME
    from engine.train.export import write_text_atomic

    write_text_atomic(out, json.dumps(evaluation, indent=1, ensure_ascii=False) + "\n")
    ctx.artifact(str(out), "evaluation")
    return dict(evaluation, file=str(out), seconds=round(time.perf_counter() - started, 2))
