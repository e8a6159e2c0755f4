"""Shape recognition for the toy evaluator: a mask's coverage, brought into a canonical frame, is
compared with templates drawn from the world's own outlines at every rotation, sharp and blurred."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from engine.toy.world import SHAPES, shape_polygon

TEMPLATE_GRID = 40  # canonical frame resolution (cells per side)
TEMPLATE_EXTENT = 1.3  # canonical frame half-width, in units where the shape's area is 1
# Template blurs (sigma, in canonical cells; a cell is 2*TEMPLATE_EXTENT/TEMPLATE_GRID units, so a
# 10-px-radius star blurred by 1 px is about 1.5 cells): the best template over all blurs wins.
TEMPLATE_BLURS = (0.0, 1.0, 2.0, 3.0, 4.0)
# Rotations searched per shape (degrees): each shape's symmetry period; hearts are not symmetric.
SHAPE_ROTATIONS: dict[str, tuple[float, ...]] = {
    "circle": (0.0,),
    "square": tuple(float(a) for a in range(0, 90, 3)),
    "triangle": tuple(float(a) for a in range(0, 120, 3)),
    "star": tuple(float(a) for a in range(0, 72, 3)),
    "heart": tuple(float(a) for a in range(-45, 46, 3)),
}


def _canonical_polygon(shape: str, angle: float) -> list[tuple[float, float]]:
    """The world's outline of ``shape``, centroid at the origin, scaled to unit area."""
    pts = np.array(shape_polygon(shape, 0.0, 0.0, 1.0, angle))
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    cx = ((x + xn) * cross).sum() / (6.0 * area)
    cy = ((y + yn) * cross).sum() / (6.0 * area)
    scale = 1.0 / math.sqrt(abs(area))
    return [((px - cx) * scale, (py - cy) * scale) for px, py in pts]


def _rasterise_canonical(polygon, grid: int = TEMPLATE_GRID, extent: float = TEMPLATE_EXTENT, ss: int = 4):
    big = grid * ss
    to_px = big / (2 * extent)
    img = Image.new("L", (big, big), 0)
    ImageDraw.Draw(img).polygon([((x + extent) * to_px, (y + extent) * to_px) for x, y in polygon], fill=255)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a.reshape(grid, ss, grid, ss).mean(axis=(1, 3))


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return a
    radius = int(math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, radius)
    rows = np.stack([np.convolve(r, k, mode="valid") for r in p])
    return np.stack([np.convolve(c, k, mode="valid") for c in rows.T]).T


@lru_cache(maxsize=1)
def shape_templates() -> tuple[np.ndarray, list[str]]:
    """(n_templates, grid*grid) coverage maps and the shape name of each row: every shape at every
    searched rotation, sharp and at each of ``TEMPLATE_BLURS`` (blurry images of small objects)."""
    rows, names = [], []
    for shape in SHAPES:
        for angle in SHAPE_ROTATIONS[shape]:
            sharp = _rasterise_canonical(_canonical_polygon(shape, angle))
            for sigma in TEMPLATE_BLURS:
                rows.append(_gaussian_blur(sharp, sigma).ravel())
                names.append(shape)
    return np.stack(rows).astype(np.float32), names


def canonical_map(
    coverage: np.ndarray, grid: int = TEMPLATE_GRID, extent: float = TEMPLATE_EXTENT
) -> np.ndarray:
    """Resample a coverage map (0..1) so the object's centroid is central and its area is 1."""
    total = float(coverage.sum())
    if total <= 0:
        return np.zeros((grid, grid), dtype=np.float32)
    h, w = coverage.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cy = float((coverage * (ys + 0.5)).sum() / total)
    cx = float((coverage * (xs + 0.5)).sum() / total)
    unit = math.sqrt(total)  # pixels per canonical unit
    cell = 2 * extent * unit / grid  # pixels per canonical cell
    factor = int(cell)  # area-average big objects first so a sample sees its whole cell
    if factor >= 2:
        hh, ww = h // factor * factor, w // factor * factor
        coverage = coverage[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))
        cx, cy, unit = cx / factor, cy / factor, unit / factor
        h, w = coverage.shape
    u = (np.arange(grid) + 0.5) / grid * 2 * extent - extent
    sx = cx + u * unit - 0.5
    sy = cy + u * unit - 0.5
    x0 = np.floor(sx).astype(int)
    y0 = np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    padded = np.pad(coverage, 1)

    def at(yy, xx):
        return padded[np.clip(yy + 1, 0, h + 1)[:, None], np.clip(xx + 1, 0, w + 1)[None, :]]

    top = at(y0, x0) * (1 - fx)[None, :] + at(y0, x0 + 1) * fx[None, :]
    bottom = at(y0 + 1, x0) * (1 - fx)[None, :] + at(y0 + 1, x0 + 1) * fx[None, :]
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32)


def classify_shape(coverage: np.ndarray) -> dict[str, float]:
    """Soft IoU of the best template of each shape."""
    templates, names = shape_templates()
    a = canonical_map(coverage).ravel()[None, :]
    iou = np.minimum(a, templates).sum(1) / np.maximum(np.maximum(a, templates).sum(1), 1e-6)
    scores: dict[str, float] = {}
    for name, value in zip(names, iou.tolist(), strict=True):
        scores[name] = max(scores.get(name, 0.0), value)
    return scores
