"""A deterministic evaluator for toy-world images: what is in the picture, and does it match a caption?

Pure numpy + Pillow, no learned weights, so its verdicts are reproducible and its errors measurable
(``python -m eval.evaluator_accuracy``). Pipeline for one RGB image:

1. **Background** – the median of the outer ring of pixels, named by the nearest of ``BACKGROUNDS``.
2. **Foreground** – pixels further than ``FOREGROUND_DISTANCE`` from that colour (in themselves and
   on average over their 3x3 neighbourhood, so pixel noise drops out), split into 8-connected
   components (a run-length union-find, below). A component holding two touching objects of
   different palette colours is split between them; same-coloured pieces cut apart by stripes
   that look like the background (white on white, or blurred) are regrouped when together they
   form a good shape.
3. **Colour** – the median of a component's strongly coloured interior pixels (white/black pattern
   pixels and anti-aliased rims excluded), named by the nearest ``COLOURS`` entry in CIELAB.
4. **Mask** – each pixel's coverage ``alpha`` is its projection onto the line from the background
   colour to the object colour (edges of a rendered or blurred shape are mixtures of the two);
   ``alpha >= 0.5`` (plus white/black pattern pixels), holes filled. This matches the world's own
   ground truth (supersampled coverage thresholded at one half).
5. **Shape** – the coverage map is resampled into a canonical frame (centroid at the origin, area
   scaled to 1) and compared, by soft IoU, with templates of every shape drawn from the world's own
   polygons at every rotation (within each shape's symmetry; hearts within ±45°), sharp and blurred.
   The best template names the shape; its IoU is the shape confidence.
6. **Pattern** (subjects) – inside the eroded mask, the fractions of pixels nearer white / near-black
   than the body colour, and the elongation of the light blobs: dots (round light blobs), stripes
   (elongated light blobs), face (dark blobs).

Measured (``python -m eval.evaluator_accuracy``, 1000 held-out scenes at 64 px, 100 at 512 px):
100% shape / colour / background / count on clean and on blurred+noisy renders; mask IoU 0.98
(64 px) / 0.997 (512 px) clean, 0.95 / 0.96 blurred+noisy. Heavily blurred small stars become
round blobs and are then called circles (see ``Detection.shape_margin``).

Entry points: :func:`analyse` / :func:`detect` (shape templates in :mod:`engine.toy.shape_templates`); verdicts (``subject_present``,
``score_caption``) live in :mod:`engine.toy.scoring`, pixel helpers in :mod:`engine.toy.imageops`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from engine.toy.imageops import (  # noqa: F401  (re-exported: tests and eval import them from here)
    _PALETTE_LAB,
    _PALETTE_NAMES,
    _shift_or,
    delta_e,
    dilate,
    erode,
    fill_holes,
    label,
    name_background,
    name_colour,
    rgb_to_lab,
)
from engine.toy.shape_templates import (  # noqa: F401  (re-exported)
    SHAPE_ROTATIONS,
    TEMPLATE_GRID,
    canonical_map,
    classify_shape,
    shape_templates,
)

FOREGROUND_DISTANCE = 45.0  # RGB distance from the background colour that marks a pixel as object
MIN_AREA_FRACTION = 0.003  # smaller objects are specks (at 64 px: 12 pixels)
MIN_PIECE_FRACTION = 0.0005  # smaller foreground pieces are ignored (noise; tips cut off by stripes)
# Stripes that look like the background (white on white; blurred on pale blue) cut an object into
# same-coloured pieces: pieces closer than MARKING_GAP * sqrt(their area) are regrouped if together
# they make a good shape.
MARKING_GAP = 0.2
MERGE_MIN_SHAPE_SCORE = 0.75
RECLOSE_BELOW = 0.7  # a mask whose best shape score is lower is tried closed over marking-wide gaps
SPLIT_DELTA_E = 30.0  # touching objects are split where pixels are this close to two palette colours
SUBJECT_COLOUR_DELTA_E = 30.0  # a detection is the subject's colour within this CIELAB distance
PATTERNS = ("none", "dots", "stripes", "face")
WHITE = np.array([255.0, 255.0, 255.0])
BLACK = np.array([20.0, 20.0, 20.0])


@dataclass
class Detection:
    shape: str
    colour: str
    mask: np.ndarray  # bool, same HxW as the image
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)
    area_fraction: float  # mask pixels / image pixels
    confidence: float  # min(shape_confidence, colour_confidence)
    centroid: tuple[float, float] = (0.0, 0.0)  # (x, y), fractions of the image width / height
    rgb: tuple[int, int, int] = (0, 0, 0)  # measured body colour
    shape_confidence: float = 0.0  # soft IoU with the best template, 0..1
    shape_margin: float = 0.0  # best minus second-best shape score (small: an ambiguous blob)
    colour_confidence: float = 0.0  # 1 at the palette colour, falling with CIELAB distance
    colour_distance: float = 0.0  # CIELAB ΔE76 between rgb and COLOURS[colour]
    shape_scores: dict[str, float] = field(default_factory=dict)
    pattern: str = "none"
    pattern_scores: dict[str, float] = field(default_factory=dict)


@dataclass
class Analysis:
    background: str
    background_rgb: tuple[int, int, int]
    detections: list[Detection]
    size: tuple[int, int]  # (height, width)


# ------------------------------------------------------------------------------------ patterns


def _elongation(ys: np.ndarray, xs: np.ndarray) -> float:
    if len(ys) < 3:
        return 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # pixel extent
    ev = np.linalg.eigvalsh(cov)
    return float(math.sqrt(ev[1] / max(ev[0], 1e-9)))


def pattern_features(image: np.ndarray, mask: np.ndarray, body_rgb) -> dict[str, float]:
    """Light/dark pixel fractions and blob structure inside an object's (eroded) mask."""
    rim = max(1, round(math.sqrt(mask.sum()) / 40))
    inner = erode(mask, rim)
    if inner.sum() < 8:
        inner = mask
    px = image[inner].astype(np.float64)
    body = np.asarray(body_rgb, dtype=np.float64)

    def toward(target):
        d = target - body
        return (px - body) @ d / max(float(d @ d), 1.0)

    light = toward(WHITE) > 0.5
    dark = toward(BLACK) > 0.5
    feats = {"light_fraction": float(light.mean()), "dark_fraction": float(dark.mean())}
    for name, sel in (("light", light), ("dark", dark)):
        plane = np.zeros(mask.shape, dtype=bool)
        plane[inner] = sel
        lab, n = label(plane)
        sizes = np.bincount(lab.ravel())[1:] if n else np.zeros(0)
        keep = [i + 1 for i, s in enumerate(sizes.tolist()) if s >= 2]
        feats[f"{name}_blobs"] = float(len(keep))
        if keep:
            elong, weight = 0.0, 0.0
            for i in keep:
                ys, xs = np.nonzero(lab == i)
                elong += _elongation(ys, xs) * len(ys)
                weight += len(ys)
            feats[f"{name}_elongation"] = elong / weight
        else:
            feats[f"{name}_elongation"] = 1.0
    return feats


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def classify_pattern(feats: dict[str, float]) -> dict[str, float]:
    light, dark = feats["light_fraction"], feats["dark_fraction"]
    elong = feats["light_elongation"]
    lit = _ramp(light, 0.02, 0.05)
    scores = {
        "dots": lit * (1.0 - _ramp(elong, 1.8, 2.6)) * _ramp(feats["light_blobs"], 0, 1),
        "stripes": lit * _ramp(elong, 1.8, 2.6),
        "face": _ramp(dark, 0.01, 0.025) * (1.0 - _ramp(light, 0.05, 0.1)) * (1.0 - _ramp(dark, 0.3, 0.45)),
    }
    scores["none"] = 1.0 - max(scores.values())
    return scores


# ------------------------------------------------------------------------------------ analysis


def _body_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median of the strongly coloured interior pixels (rims and white/black markings excluded)."""
    inner = erode(mask, 1)
    if inner.sum() < 6:
        inner = mask
    px = image[inner].astype(np.float64)
    chroma = px.max(1) - px.min(1)
    strong = chroma >= 0.6 * np.percentile(chroma, 90)
    return np.median(px[strong] if strong.sum() >= 3 else px, axis=0)


def _crop_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
        slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)),
    )


def _box3(img: np.ndarray) -> np.ndarray:
    """3x3 box mean (edges replicated)."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _split_by_colour(img: np.ndarray, comp: np.ndarray, min_core: float) -> list[np.ndarray]:
    """Split a component that is two touching objects of different palette colours.

    Seeds are the eroded regions whose pixels are confidently one palette colour (anti-aliased rims
    between colours are thin and vanish under erosion); with two or more seeds the rest of the
    component is shared out by growing the seeds in turn, one pixel ring at a time.
    """
    sy, sx = _crop_box(comp, 1)
    cmask = comp[sy, sx]
    if cmask.sum() < 2 * min_core:
        return [comp]
    diff = rgb_to_lab(img[sy, sx])[..., None, :] - _PALETTE_LAB
    dist = np.sqrt((0.5 * diff[..., 0]) ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)
    nearest = dist.argmin(-1)
    confident = cmask & (dist.min(-1) < SPLIT_DELTA_E)
    seeds = []
    for c in np.unique(nearest[confident]):
        core = erode(confident & (nearest == c), 1)
        if core.sum() >= min_core:
            seeds.append(core)
    if len(seeds) < 2:
        return [comp]
    owner = np.zeros(cmask.shape, dtype=np.int32)
    for k, core in enumerate(seeds, start=1):
        owner[core & (owner == 0)] = k
    while True:
        free = cmask & (owner == 0)
        if not free.any():
            break
        grown = False
        for k in range(1, len(seeds) + 1):
            add = dilate(owner == k, 1) & free
            if add.any():
                owner[add] = k
                free &= ~add
                grown = True
        if not grown:  # pixels not reachable from any seed (cannot happen in one component)
            owner[free] = 1
    out = []
    for k in range(1, len(seeds) + 1):
        part = np.zeros_like(comp)
        part[sy, sx] = owner == k
        out.append(part)
    return out


def _components(img: np.ndarray, bg: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Foreground components as (boolean mask, regrouped). Same-coloured pieces split by white
    markings that look like the background (a striped object cut into bands) are regrouped: their mask
    is closed over the gaps, and ``regrouped`` is True."""
    h, w = img.shape[:2]
    # far from the background in the pixel itself, and at least half as far on average over its 3x3
    # neighbourhood (noise / 3): isolated noisy pixels drop out, thin star tips stay
    distance = np.sqrt(((img - bg) ** 2).sum(-1))
    smoothed = np.sqrt(((_box3(img) - bg) ** 2).sum(-1))
    rough = (distance > FOREGROUND_DISTANCE) & (smoothed > FOREGROUND_DISTANCE / 2)
    labels, n = label(rough)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    min_piece = max(3.0, MIN_PIECE_FRACTION * h * w)
    pieces = []
    for i in range(1, n + 1):
        if sizes[i] >= min_piece:
            pieces.extend(_split_by_colour(img, labels == i, MIN_AREA_FRACTION * h * w / 4))
    if len(pieces) < 2:
        return [(p, False) for p in pieces]
    bodies = [_body_colour(img, p) for p in pieces]
    areas = [int(p.sum()) for p in pieces]
    boxes = [_crop_box(p, 0) for p in pieces]
    parent = list(range(len(pieces)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    similar = [[delta_e(a, b) <= 20.0 for b in bodies] for a in bodies]
    kin_area = [sum(a for a, same in zip(areas, row, strict=True) if same) for row in similar]
    for i, j in itertools.combinations(range(len(pieces)), 2):
        if not similar[i][j]:
            continue
        gap = math.ceil(MARKING_GAP * math.sqrt(kin_area[i])) + 1
        (ya, xa), (yb, xb) = boxes[i], boxes[j]
        if (
            ya.start - gap > yb.stop
            or yb.start - gap > ya.stop
            or xa.start - gap > xb.stop
            or xb.start - gap > xa.stop
        ):
            continue
        sy, sx = _crop_box(pieces[i] | pieces[j], gap + 1)
        if (dilate(pieces[i][sy, sx], gap) & pieces[j][sy, sx]).any():
            parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append((pieces[members[0]], False))
            continue
        union = np.logical_or.reduce([pieces[i] for i in members])
        gap = math.ceil(MARKING_GAP * math.sqrt(sum(areas[i] for i in members))) + 1
        sy, sx = _crop_box(union, gap + 2)
        closed = np.zeros_like(union)
        closed[sy, sx] = fill_holes(erode(dilate(union[sy, sx], gap), gap))
        if max(classify_shape(closed.astype(np.float32)).values()) >= MERGE_MIN_SHAPE_SCORE:
            out.append((closed, True))  # one striped object
        else:
            out.extend((pieces[i], False) for i in members)  # separate objects that happen to be close
    return out


def analyse(image) -> Analysis:
    """Background name and one :class:`Detection` per object, largest first."""
    img = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    h, w = img.shape[:2]
    imgf = img[..., :3].astype(np.float32)
    ring = max(1, min(h, w) // 64)
    border = np.concatenate(
        [
            imgf[:ring].reshape(-1, 3),
            imgf[-ring:].reshape(-1, 3),
            imgf[:, :ring].reshape(-1, 3),
            imgf[:, -ring:].reshape(-1, 3),
        ]
    )
    bg = np.median(border, axis=0)
    min_area = MIN_AREA_FRACTION * h * w
    components = [(c, r) for c, r in _components(imgf, bg) if c.sum() >= min_area]
    taken = np.logical_or.reduce([c for c, _ in components]) if components else np.zeros((h, w), dtype=bool)
    detections: list[Detection] = []
    for comp_mask, regrouped in components:
        margin = 2 + min(h, w) // 128
        sy, sx = _crop_box(comp_mask, margin)
        crop = imgf[sy, sx]
        cmask = comp_mask[sy, sx]
        region = dilate(cmask, 1) & (~taken[sy, sx] | cmask)
        body = _body_colour(crop, cmask)
        d = body - bg
        alpha = ((crop - bg) @ d) / max(float(d @ d), 1.0)
        lum = crop.mean(-1)
        chroma = crop.max(-1) - crop.min(-1)
        far = np.sqrt(((crop - bg) ** 2).sum(-1)) > FOREGROUND_DISTANCE
        marking = cmask & far & (chroma < 40) & ((lum > 200) | (lum < 70))
        if regrouped:  # the gaps between the pieces are markings whatever their colour
            marking = cmask
        solid = region & ((alpha >= 0.5) | marking)
        if solid.sum() < min_area:
            continue
        pieces, k = label(solid)
        if k > 1:  # keep the main body (and any sizeable piece), drop rim fragments
            psizes = np.bincount(pieces.ravel())[1:]
            solid = np.isin(pieces, [i + 1 for i, s in enumerate(psizes) if s >= 0.2 * psizes.max()])
        solid = fill_holes(solid)
        coverage = np.where(region, np.clip(alpha, 0.0, 1.0), 0.0)
        coverage[solid & (alpha < 0.5)] = 1.0  # markings and filled holes count as the object
        coverage[solid & (alpha > 1.0)] = 1.0
        shape_scores = classify_shape(coverage)
        if max(shape_scores.values()) < RECLOSE_BELOW:
            # ragged: markings that look like the background (blurred stripes) bite into the
            # object from its edge; close the mask over gaps of a marking's width and keep that
            # if it makes a clearly better shape
            gap = math.ceil(MARKING_GAP * math.sqrt(solid.sum())) + 1
            closed = fill_holes(erode(dilate(np.pad(solid, gap), gap), gap))[gap:-gap, gap:-gap]
            closed_coverage = np.where(closed, 1.0, coverage)
            closed_scores = classify_shape(closed_coverage)
            best = max(closed_scores.values())
            if best >= MERGE_MIN_SHAPE_SCORE and best > max(shape_scores.values()) + 0.1:
                solid, coverage, shape_scores = closed, closed_coverage, closed_scores
        shape = max(shape_scores, key=shape_scores.get)
        colour, dist = name_colour(body)
        colour_conf = float(math.exp(-((dist / 40.0) ** 2)))
        mask = np.zeros((h, w), dtype=bool)
        mask[sy, sx] = solid
        ys, xs = np.nonzero(mask)
        pscores = classify_pattern(pattern_features(crop, solid, body))
        detections.append(
            Detection(
                shape=shape,
                colour=colour,
                mask=mask,
                box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                area_fraction=float(mask.sum()) / (h * w),
                confidence=min(shape_scores[shape], colour_conf),
                centroid=(float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h),
                rgb=tuple(int(round(v)) for v in body),
                shape_confidence=shape_scores[shape],
                shape_margin=shape_scores[shape] - sorted(shape_scores.values())[-2],
                colour_confidence=colour_conf,
                colour_distance=dist,
                shape_scores=shape_scores,
                pattern=max(pscores, key=pscores.get),
                pattern_scores=pscores,
            )
        )
    detections.sort(key=lambda det: -det.area_fraction)
    return Analysis(name_background(bg), tuple(int(round(v)) for v in bg), detections, (h, w))


def detect(image) -> list[Detection]:
    return analyse(image).detections
