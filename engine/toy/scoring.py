"""Verdicts on toy-world images: is a subject present, does the picture match a caption?

Built on :func:`engine.toy.evaluator.analyse` (what is in the picture).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from engine.toy.evaluator import SUBJECT_COLOUR_DELTA_E, Analysis, Detection, analyse, delta_e
from engine.toy.world import BACKGROUNDS, COLOURS, RELATIONS, SHAPES, Scene

# ------------------------------------------------------------------------------------ subjects


def subject_match(det: Detection, subject) -> tuple[bool, float]:
    """Is this detection the subject (shape, colour within ``SUBJECT_COLOUR_DELTA_E``, pattern)?"""
    de = delta_e(det.rgb, subject.rgb)
    shape_s = det.shape_scores.get(subject.shape, 0.0)
    colour_s = max(0.0, 1.0 - de / (2 * SUBJECT_COLOUR_DELTA_E))
    pattern_s = det.pattern_scores.get(subject.pattern or "none", 0.0)
    ok = (
        det.shape == subject.shape
        and de <= SUBJECT_COLOUR_DELTA_E
        and det.pattern == (subject.pattern or "none")
    )
    return ok, (shape_s + colour_s + pattern_s) / 3.0


def subject_present(image, subject) -> tuple[bool, float]:
    """(whether some object is the subject, the best match score 0..1)."""
    analysis = image if isinstance(image, Analysis) else analyse(image)
    best = (False, 0.0)
    for det in analysis.detections:
        ok, score = subject_match(det, subject)
        if (ok, score) > best:
            best = (ok, score)
    return best


# ------------------------------------------------------------------------------------ captions


@dataclass
class CaptionSpec:
    objects: list[tuple[str | None, str | None]]  # (colour, shape) per object; None = unspecified
    background: str | None = None
    relation: str | None = None


def parse_caption(text: str) -> CaptionSpec:
    """Objects, relation and background named by a world-style caption."""
    text = text.lower()
    background = None
    m = re.search(r"on an? (\w+) background", text)
    if m and m.group(1) in BACKGROUNDS:
        background = m.group(1)
        text = text[: m.start()] + text[m.end() :]
    relation = None
    for rel in sorted(RELATIONS, key=len, reverse=True):
        idx = text.find(f" {rel} ")
        if idx >= 0:
            relation = rel
            parts = [text[:idx], text[idx + len(rel) + 2 :]]
            break
    else:  # no spatial relation: objects may still be listed ("a red circle and a blue star")
        parts = re.split(r"\b(?:next to|and|with|beside)\b", text)
    objects = []
    for part in parts:
        words = re.findall(r"[a-z]+", part)
        colour = next((wd for wd in words if wd in COLOURS), None)
        shape = next((wd for wd in words if wd in SHAPES), None)
        if colour or shape:
            objects.append((colour, shape))
    return CaptionSpec(objects, background, relation if len(objects) == 2 else None)


def _spec_of(spec) -> CaptionSpec:
    if isinstance(spec, CaptionSpec):
        return spec
    if isinstance(spec, Scene):
        return CaptionSpec([(o.colour, o.shape) for o in spec.objects], spec.background, spec.relation)
    if isinstance(spec, str):
        return parse_caption(spec)
    raise TypeError(f"expected a Scene, CaptionSpec or caption string, not {type(spec).__name__}")


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """``a <relation> b`` by centroids (image y grows downwards)."""
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]


def score_caption(image, spec) -> dict:
    """How well an image shows a caption (a string, a :class:`Scene` or a :class:`CaptionSpec`).

    Keys (None where the caption does not say): ``background_ok``, ``count_ok``; per wanted object
    ``colour_ok``/``shape_ok``/``object_ok`` (single-object captions: whether the main detection
    has that colour / shape / both); ``colours_ok``/``shapes_ok``/``objects_ok`` (every wanted colour /
    shape / colour+shape is present on distinct detections); ``relation_ok`` (the matched pair's
    centroids satisfy the relation); ``score`` (mean of the non-None booleans); ``matched``.
    """
    spec = _spec_of(spec)
    analysis = image if isinstance(image, Analysis) else analyse(image)
    dets = analysis.detections
    wanted = spec.objects
    out: dict = {
        "background_ok": None if spec.background is None else analysis.background == spec.background,
        "count_ok": len(dets) == len(wanted),
        "n_detections": len(dets),
    }

    def fit(want, det) -> int:
        colour, shape = want
        return 2 * (colour is not None and det.colour == colour) + (shape is not None and det.shape == shape)

    best_perm, best_fit = None, -1
    if dets and wanted:
        k = min(len(wanted), len(dets))
        for perm in itertools.permutations(range(len(dets)), k):
            total = sum(fit(wanted[i], dets[j]) for i, j in enumerate(perm))
            if total > best_fit:
                best_perm, best_fit = perm, total
    matched: list[Detection | None] = [None] * len(wanted)
    if best_perm is not None:
        for i, j in enumerate(best_perm):
            matched[i] = dets[j]

    def all_ok(pred) -> bool:
        return all(m is not None and pred(w, m) for w, m in zip(wanted, matched, strict=True))

    colour_ok = all_ok(lambda w, m: w[0] is None or m.colour == w[0])
    shape_ok = all_ok(lambda w, m: w[1] is None or m.shape == w[1])
    object_ok = all_ok(lambda w, m: (w[0] is None or m.colour == w[0]) and (w[1] is None or m.shape == w[1]))
    if len(wanted) == 1:
        out.update(colour_ok=colour_ok, shape_ok=shape_ok, object_ok=object_ok)
    out.update(colours_ok=colour_ok, shapes_ok=shape_ok, objects_ok=object_ok)
    out["relation_ok"] = None
    if spec.relation and len(wanted) == 2:
        out["relation_ok"] = bool(
            matched[0] is not None
            and matched[1] is not None
            and relation_holds(matched[0], matched[1], spec.relation)
        )
    out["matched"] = [
        None if m is None else {"colour": m.colour, "shape": m.shape, "centroid": m.centroid} for m in matched
    ]
    flags = [v for k, v in out.items() if k.endswith("_ok") and isinstance(v, bool)]
    out["score"] = float(np.mean(flags)) if flags else 0.0
    return out
