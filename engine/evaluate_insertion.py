"""Putting a subject into pictures, measured: every run × source picture through the real
insertion edit (``engine.edit.run_edit_job``: the run on the edited branch only), then one score
per run and metric, with its sample count or the reason it is not available (as the gallery
evaluation does). Parameters, metrics and the result file: ``engine.protocol.insertion``.

The edited area (what "outside" means for PSNR and LPIPS): on the toy world the union of the
source's object and the edit's object, as the toy evaluator segments them (it knows the world's
ground truth, so no model's opinion enters); elsewhere the union of the swapped words'
cross-attention maps (the source's replaced word, the target's token and class noun), summed over
the steps, dilated and thresholded the way local blend makes its mask (``EditController.blend``),
since the heatmap file the edit writes holds exactly those maps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from engine.evaluate import _open_images, _score, _unavailable
from engine.jobs import JobCancelled, JobFailed
from engine.protocol.editing import insertion_blend_words, insertion_target, normalise_word
from engine.protocol.insertion import INSERTION_METRICS, INSERTION_NAME, INSERTION_VERSION

UNITS_PER_EDIT = 100  # progress units of one edit (its inversion, then its denoising)
PSNR_CAP_DB = 100.0  # an identical outside has infinite PSNR; JSON has no infinity
STRUCTURE_SCALE = 1000.0  # PIE-Bench reports the structure distance ×10³
NO_TOY = "needs the toy world's evaluator: only for a toy-world subject (Dotty, Stripe, Smiley) on the toy model"


class _EditContext:
    """The edit job's view of this job: its progress is a share of the whole, its cancel is this job's,
    its images are listed in the result file rather than streamed one by one."""

    def __init__(self, ctx, done: int, total: int, inverted: bool, **where):
        self.ctx, self.done, self.total, self.inverted, self.where = ctx, done, total, inverted, where

    @property
    def cancelled(self) -> bool:
        return self.ctx.cancelled

    def check_cancelled(self) -> None:
        self.ctx.check_cancelled()

    def progress(self, step: int, total: int, *, force: bool = False, **extra) -> bool:
        share = min(step / total, 1.0) if total else 0.0
        if self.inverted:  # an inverted source: its inversion is the first half of the edit
            share = share / 2 if extra.get("phase") == "inverting" else 0.5 + share / 2
        unit = self.done * UNITS_PER_EDIT + int(share * (UNITS_PER_EDIT - 1))
        return self.ctx.progress(unit, self.total, force=force, phase=extra.get("phase", "editing"), **self.where)

    def artifact(self, path: str, kind: str, **meta) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        self.ctx.log(message, level)


# ------------------------------------------------------------------------------------ edited areas
def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _named_object(prompt: str, into: str, class_noun: str) -> tuple[str | None, str | None] | None:
    """(colour, shape) of the object the subject replaces, as the toy caption parser reads the prompt."""
    from engine.toy.scoring import parse_caption

    objects = parse_caption(prompt).objects
    wanted = {normalise_word(into), normalise_word(class_noun)}
    named = [o for o in objects if wanted & {o[0], o[1]}]
    return (named or objects)[0] if len(named) == 1 or len(objects) == 1 else None


def toy_verdict(original: np.ndarray, edited: np.ndarray, prompt: str, into: str, class_noun: str,
                subject) -> tuple[dict, np.ndarray | None]:
    """The toy evaluator on one edit: is the subject there, where was the source's object, how much of
    it does the edit's object cover (IoU), and the edited area (both objects) — None when the
    evaluator finds no such object in the source."""
    from engine.toy.evaluator import analyse
    from engine.toy.scoring import subject_match

    after = analyse(edited).detections
    matches = [d for d in after if subject_match(d, subject)[0]]
    verdict = {"present": bool(matches), "object_found": False, "iou": None}
    named = _named_object(prompt, into, class_noun)
    before = [d for d in analyse(original).detections if named is not None
              and (named[0] is None or d.colour == named[0]) and (named[1] is None or d.shape == named[1])]
    source = max(before, key=lambda d: d.area_fraction, default=None)
    if source is None:
        return verdict, None
    # the object that took its place: the subject if drawn, else whatever overlaps it most
    best = max(matches or after, key=lambda d: int((source.mask & d.mask).sum()), default=None)
    area = source.mask | best.mask if best is not None else source.mask
    inter = int((source.mask & best.mask).sum()) if best is not None else 0
    verdict.update(object_found=True, iou=round(inter / int(area.sum()), 4))
    return verdict, area


def attention_area(heatmaps: Path, words: dict[str, list[str]], threshold: float, size: tuple[int, int]) -> np.ndarray:
    """The swapped words' cross-attention as a mask of the picture (``size`` = (w, h)): per prompt
    the words' maps at the blend resolution (16, else the finest ≤ 32), summed over the steps and
    averaged over the layers, dilated 3×3, scaled to the picture, normalised to its maximum,
    thresholded; the prompts' masks unioned — local blend's mask, from the heatmap file."""
    import torch
    import torch.nn.functional as F

    from engine.attention.heatmaps import read_heatmaps

    meta, arrays = read_heatmaps(heatmaps)
    available = sorted(meta["resolutions"])
    res = 16 if 16 in available else max([r for r in available if r <= 32] or available)
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for prompt, wanted in words.items():
        wanted_words = {normalise_word(w) for w in wanted}
        positions = [t for w in meta["prompts"].get(prompt, {}).get("words", [])
                     if normalise_word(w["word"]) in wanted_words for t in w["tokens"]]
        key = f"{prompt}_{res}"
        if not positions or key not in arrays:
            continue
        maps = torch.from_numpy(arrays[key].astype(np.float32))  # (steps, layers, tokens, h, w)
        grid = maps[:, :, positions].sum(2).mean(1).sum(0)[None, None]
        grid = F.max_pool2d(grid, 3, stride=1, padding=1)
        grid = F.interpolate(grid, size=(size[1], size[0]), mode="bilinear", align_corners=False)[0, 0]
        grid = grid / grid.max().clamp_min(1e-12)
        mask |= (grid > threshold).numpy()
    return mask


def _save_mask(mask: np.ndarray, path: Path) -> str:
    from PIL import Image

    from engine.generate import save_png_atomic

    return str(save_png_atomic(Image.fromarray(mask.astype(np.uint8) * 255), path, "edited area"))


# ------------------------------------------------------------------------------------ one edit
def _edit_params(params: dict, run: dict, source: dict, index: int, out_dir: Path, heatmaps: bool) -> dict:
    from engine.protocol import validate_job

    words = insertion_blend_words(params["token"], params["class_noun"]) if params["blend"] else None
    return validate_job("edit", {
        "source_prompt": source["prompt"], "target_prompt": source["target"], "seed": source.get("seed", 0),
        "image": source.get("image", ""), "invert": params["invert"], "steps": params["steps"],
        "guidance": params["guidance"], "cross_steps": params["cross_steps"], "self_steps": params["self_steps"],
        "shared_steps": params["shared_steps"], "blend_words": words, "blend_threshold": params["blend_threshold"],
        "heatmaps": heatmaps, "adapter": run.get("adapter"), "out_dir": str(out_dir / run["key"]),
        "name": f"s{index:02d}",
    })


def _keep(result: dict, index: int, source: dict, params: dict, into: str, out_dir: Path, toy_subject) -> dict:
    """What the scores need from one edit, written beside it: the verdict and the edited area."""
    original, edited = Path(result["original"]), Path(result["edited"])
    entry = {"source": index, "original": str(original.relative_to(out_dir)),
             "edited": str(edited.relative_to(out_dir)), "area": "", "present": None, "iou": None}
    before, after = _rgb(original), _rgb(edited)
    if toy_subject is not None:
        verdict, area = toy_verdict(before, after, source["prompt"], into, params["class_noun"], toy_subject)
        entry.update(verdict)
    else:
        heatmaps = Path(result["heatmaps"])
        words = {"source": [into], "target": [params["token"], params["class_noun"]]}
        area = attention_area(heatmaps, words, float(params["blend_threshold"]), (before.shape[1], before.shape[0]))
        heatmaps.unlink(missing_ok=True)  # only read for the area: megabytes per edit on a real model
    if area is not None:
        entry["area"] = str(Path(_save_mask(area, edited.with_name(edited.name.replace("-edited", "-area")))
                                 ).relative_to(out_dir))
    return entry


# ------------------------------------------------------------------------------------ scores
def _area(out_dir: Path, entry: dict) -> np.ndarray | None:
    return _rgb(out_dir / entry["area"])[..., 0] > 127 if entry["area"] else None


def compute_insertion_metric(name: str, row: dict, out_dir: Path, real: list, features, toy_subject) -> dict:
    """One metric over one run's edits; raises engine.metrics.Unavailable for a missing feature model."""
    from PIL import Image

    from engine import metrics
    from engine.edit import psnr

    edits = row["edits"]
    if not edits:
        return _unavailable("no edits of this run were made (cancelled before them)")
    if name in ("subject_rate", "object_iou") and toy_subject is None:
        return _unavailable(NO_TOY)
    if name == "subject_rate":
        return _score(np.mean([e["present"] for e in edits]), len(edits))
    with_area = [e for e in edits if e["area"]]
    left_out = len(edits) - len(with_area)
    warning = (f"{left_out} of {len(edits)} source pictures left out: the toy evaluator found no object there "
               "for the subject to replace" if left_out else "")
    if name == "object_iou":
        if not with_area:
            return _unavailable("the toy evaluator found the replaced object in none of the source pictures")
        return _score(np.median([e["iou"] for e in with_area]), len(with_area), warning)

    def opened(key: str, entries: list[dict]) -> list:
        return [Image.open(out_dir / e[key]).convert("RGB") for e in entries]

    if name == "structure":
        values = metrics.structure_distances(features.dino(), opened("original", edits), opened("edited", edits))
        return _score(STRUCTURE_SCALE * float(np.mean(values)), len(edits))
    if name == "clip_i":
        if not real:
            return _unavailable("the subject has no photos to compare with")
        return _score(metrics.clip_i(features.clip(), opened("edited", edits), real), len(edits))
    outside = [(e, ~_area(out_dir, e)) for e in with_area]
    outside = [(e, keep) for e, keep in outside if keep.any()]
    if not outside:
        return _unavailable("the edited area covers the whole picture in every edit: nothing is outside it")
    if len(outside) < len(with_area):
        warning = (warning + "; " if warning else "") + f"{len(with_area) - len(outside)} edits changed the whole picture"
    if name == "psnr_outside":
        values = []
        for e, keep in outside:
            value = min(psnr(_rgb(out_dir / e["original"]), _rgb(out_dir / e["edited"]), keep), PSNR_CAP_DB)
            e["psnr_outside"] = round(value, 2)
            values.append(value)
        return _score(np.median(values), len(values), warning)
    if name == "lpips_outside":  # PIE-Bench: both pictures with the edited area set to black
        pairs = []
        for e, keep in outside:
            a, b = (_rgb(out_dir / e[k]) * keep[..., None] for k in ("original", "edited"))
            pairs.append((Image.fromarray(a.astype(np.uint8)), Image.fromarray(b.astype(np.uint8))))
        return _score(np.mean(features.lpips().distances(pairs)), len(pairs), warning)
    raise ValueError(name)


# ------------------------------------------------------------------------------------ the job
def _plan_sources(params: dict, into: str) -> list[dict]:
    from engine.edit import load_input_image

    planned = []
    for i, source in enumerate(params["sources"]):
        prompt = " ".join(source["prompt"].split())
        try:
            target = insertion_target(prompt, into, params["token"], params["class_noun"])
        except ValueError as exc:
            raise JobFailed(f"source picture {i + 1}: {exc}", "name a word each source prompt has with "
                            "“into”, or give prompts that name the class noun", code="invalid_params") from None
        if source.get("image"):
            load_input_image(source["image"], 8, 64)  # a broken or missing picture fails now, not halfway
        planned.append({k: v for k, v in (("prompt", prompt), ("target", target), ("seed", source.get("seed")),
                                          ("image", source.get("image"))) if v not in (None, "")})
    return planned


def run_evaluate_insertion_job(params: dict, ctx, state) -> dict:
    from engine import adapters, devices
    from engine.edit import run_edit_job
    from engine.metrics import FeatureModels, Unavailable
    from engine.toy.subjects import get_subject

    started = time.perf_counter()
    loaded = state.model_cache().require()
    toy_subject = None
    if params["toy_subject"]:
        try:
            toy_subject = get_subject(params["toy_subject"])
        except KeyError as exc:
            raise JobFailed(str(exc), "toy scores exist only for the toy world's demo subjects",
                            code="invalid_params") from None
    into = params["into"].strip() or params["class_noun"]
    sources = _plan_sources(params, into)
    real = _open_images([Path(p) for p in params["real_images"] or []], "subject photos")
    names = params["metrics"] or list(INSERTION_METRICS)
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = params["runs"]
    rows = [{"column": r["key"], "label": r.get("label") or r["key"], "scores": {}, "edits": []} for r in runs]
    total = len(runs) * len(sources) * UNITS_PER_EDIT + len(runs) * len(names)
    ctx.progress(0, total, force=True)
    cancelled = False
    try:
        for run, row in zip(runs, rows, strict=True):
            ctx.log(f"putting {params['token']} in with {row['label']}")
            for index, source in enumerate(sources):
                done = sum(len(r["edits"]) for r in rows)
                sub = _EditContext(ctx, done, total, bool(source.get("image")), run=run["key"], source=index)
                result = run_edit_job(_edit_params(params, run, source, index, out_dir, toy_subject is None), sub, state)
                row["edits"].append(_keep(result, index, source, params, into, out_dir, toy_subject))
    except JobCancelled:
        cancelled = True
        ctx.log(f"cancelled after {sum(len(r['edits']) for r in rows)} of {len(runs) * len(sources)} edits; "
                "scoring those")
    finally:
        adapters.apply(loaded, None)  # the next job starts from the plain base model
    features = FeatureModels(dict(params["feature_models"] or {}), device=devices.select_device(state.device_preference))
    unavailable: dict[str, str] = {}
    scored = len(runs) * len(sources) * UNITS_PER_EDIT
    for name in names:
        for row in rows:
            if name in unavailable:
                row["scores"][name] = _unavailable(unavailable[name])
            else:
                try:
                    row["scores"][name] = compute_insertion_metric(name, row, out_dir, real, features, toy_subject)
                except Unavailable as exc:
                    unavailable[name] = exc.reason
                    row["scores"][name] = _unavailable(exc.reason)
            scored += 1
            if not cancelled:
                ctx.progress(scored, total, phase="scoring", metric=name, column=row["column"])
    evaluation = _evaluation(params, sources, rows, names, unavailable, features, len(real), into, not cancelled,
                             toy_subject is not None, loaded.ref.name)
    from engine.train.export import write_text_atomic

    path = out_dir / INSERTION_NAME
    write_text_atomic(path, json.dumps(evaluation, indent=1, ensure_ascii=False) + "\n")
    if cancelled:
        raise JobCancelled()
    ctx.artifact(str(path), "evaluation")
    return dict(evaluation, file=str(path), seconds=round(time.perf_counter() - started, 2))


def _evaluation(params, sources, rows, names, unavailable, features, real, into, complete, toy, model) -> dict:
    meta = []
    for name in names:
        info = INSERTION_METRICS[name]
        kind = info["model"]
        model_name = "toy evaluator" if kind == "toy" else (
            "" if not kind or name in unavailable else features.describe(kind))
        meta.append({"name": name, "title": info["title"], "higher_is_better": info["higher_is_better"],
                     "model": model_name, "note": info["note"]})
    area = ("the source's and the edit's objects (toy evaluator)" if toy else
            f"cross-attention of “{into}” and “{params['token']} {params['class_noun']}” (thresholded at "
            f"{params['blend_threshold']:g}, as local blend)")
    settings = {k: params[k] for k in ("steps", "guidance", "invert", "shared_steps", "cross_steps", "self_steps",
                                       "blend", "blend_threshold")}
    return {"version": INSERTION_VERSION, "kind": "insertion", "complete": complete, "token": params["token"],
            "class_noun": params["class_noun"], "into": into, "area": area, "settings": dict(settings, model=model),
            "sources": sources, "real_images": real, "metrics": meta, "rows": rows, "best": None}
