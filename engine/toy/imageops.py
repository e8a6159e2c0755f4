"""Pixel-level helpers for the toy evaluator: CIELAB colour naming and binary morphology.

Written with numpy alone (no scipy/OpenCV dependency for a 64-px oracle): connected components by
run-length union-find, 3×3 dilation/erosion, hole filling.
"""

from __future__ import annotations

import numpy as np

from engine.toy.world import BACKGROUNDS, COLOURS

# ------------------------------------------------------------------------------------ colour


def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB 0..255 (any leading shape) -> CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack(
        [116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1
    )


def delta_e(rgb_a, rgb_b) -> float:
    return float(np.linalg.norm(rgb_to_lab(rgb_a) - rgb_to_lab(rgb_b)))


_PALETTE_NAMES = list(COLOURS)
_PALETTE_LAB = rgb_to_lab(np.array([COLOURS[n] for n in _PALETTE_NAMES]))


def name_colour(rgb) -> tuple[str, float]:
    """Nearest palette colour (CIELAB, lightness half-weighted: shading varies, hue doesn't)."""
    diff = _PALETTE_LAB - rgb_to_lab(rgb)
    dist = np.sqrt((0.5 * diff[:, 0]) ** 2 + diff[:, 1] ** 2 + diff[:, 2] ** 2)
    best = int(np.argmin(dist))
    return _PALETTE_NAMES[best], float(np.linalg.norm(diff[best]))


def name_background(rgb) -> str:
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(BACKGROUNDS, key=lambda n: float(np.sum((np.array(BACKGROUNDS[n]) - rgb) ** 2)))


# ------------------------------------------------------------------------------------ binary morphology


def label(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected components of a boolean image: (int32 labels, 0 = background; count).

    Run-length union-find: runs of True in each row are joined to the overlapping runs of the row
    above, so the Python loop is over runs (a few per row), not pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    ry, rs = np.nonzero(d == 1)
    _, re_ = np.nonzero(d == -1)
    n = len(ry)
    labels = np.zeros((h, w), dtype=np.int32)
    if n == 0:
        return labels, 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    slack = 1 if connectivity == 8 else 0
    row_start = np.searchsorted(ry, np.arange(h + 1))
    ry_l, rs_l, re_l = ry.tolist(), rs.tolist(), re_.tolist()
    for y in range(1, h):
        a0, a1 = row_start[y - 1], row_start[y]
        b0, b1 = row_start[y], row_start[y + 1]
        if a0 == a1 or b0 == b1:
            continue
        j = a0
        for i in range(b0, b1):
            s, e = rs_l[i] - slack, re_l[i] + slack
            while j < a1 and re_l[j] <= s:
                j += 1
            k = j
            while k < a1 and rs_l[k] < e:
                ri, rk = find(i), find(k)
                if ri != rk:
                    parent[max(ri, rk)] = min(ri, rk)
                k += 1
    roots = [find(i) for i in range(n)]
    _, compact = np.unique(np.array(roots), return_inverse=True)
    compact = compact + 1
    for i in range(n):
        labels[ry_l[i], rs_l[i] : re_l[i]] = compact[i]
    return labels, int(compact.max())


def _shift_or(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[1:, 1:] |= mask[:-1, :-1]
    out[:-1, :-1] |= mask[1:, 1:]
    out[1:, :-1] |= mask[:-1, 1:]
    out[:-1, 1:] |= mask[1:, :-1]
    return out


def dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    for _ in range(iterations):
        mask = _shift_or(mask)
    return mask


def erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    for _ in range(iterations):
        mask = ~_shift_or(~np.pad(mask, 1))[1:-1, 1:-1]
    return mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    outside, _ = label(~padded, connectivity=4)
    return (outside != outside[0, 0])[1:-1, 1:-1] | mask
