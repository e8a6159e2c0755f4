"""Cross-attention heatmaps of an edit (the engine's ``<name>-heatmaps.npz``), as pictures.

Qt-free and torch-free: numpy in, RGB ``uint8`` out, so the arithmetic is unit-tested on its own.
The file format is documented in :mod:`engine.protocol.editing`: per prompt and latent resolution an
array ``(steps, layers, tokens, h, w)`` of each token's share of the attention.

What a user picks — which prompt, which words, which steps, which layers, how to normalise — is a
:class:`HeatmapChoice`; :func:`attention_map` turns it into one map in 0…1 and :func:`render_overlay`
lays that map, coloured, over the picture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.protocol.editing import HEATMAP_VERSION

NORMALISATIONS = {
    "max": "per-token max",  # each word scaled to its own peak: where does it look?
    "share": "share of all tokens",  # one scale for every word: how much does it get?
}
PROMPTS = ("source", "target", "negative")


class HeatmapError(ValueError):
    """A heatmap file that cannot be shown; the message says why."""


# Perceptual colour maps, sampled by hand at nine points from matplotlib's inferno and viridis
# (no matplotlib in the GUI) and interpolated linearly: lightness rises monotonically in both.
_ANCHORS = {
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)],
}


def colormap(name: str = "inferno") -> np.ndarray:
    """A 256 × 3 ``uint8`` lookup table."""
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, at, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


COLORMAPS = {name: colormap(name) for name in _ANCHORS}


@dataclass
class Heatmaps:
    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]  # "<prompt>_<res>" → (steps, layers, tokens, h, w)

    @property
    def steps(self) -> int:
        return int(self.meta.get("steps") or next(iter(self.arrays.values())).shape[0])

    @property
    def resolutions(self) -> list[int]:
        """Latent resolutions that have maps, largest (sharpest) first."""
        found = {int(key.rsplit("_", 1)[1]) for key in self.arrays}
        return sorted(found, reverse=True)

    def layers(self, resolution: int) -> list[str]:
        names = (self.meta.get("layers") or {}).get(str(resolution))
        if names:
            return list(names)
        array = next((a for k, a in self.arrays.items() if k.endswith(f"_{resolution}")), None)
        return [f"layer {i + 1}" for i in range(0 if array is None else array.shape[1])]

    @property
    def prompts(self) -> list[str]:
        """The prompts with maps, in PROMPTS order."""
        have = {key.rsplit("_", 1)[0] for key in self.arrays}
        return [p for p in PROMPTS if p in have]

    def prompt_info(self, prompt: str) -> dict:
        return (self.meta.get("prompts") or {}).get(prompt) or {}

    def words(self, prompt: str) -> list[dict]:
        """``[{"word": str, "tokens": [index…]}]`` of the prompt, as the engine tokenised it."""
        return list(self.prompt_info(prompt).get("words") or [])

    def array(self, prompt: str, resolution: int) -> np.ndarray:
        key = f"{prompt}_{resolution}"
        if key not in self.arrays:
            raise HeatmapError(f"the heatmap file has no {prompt} maps at {resolution}×{resolution}")
        return self.arrays[key]


def load_heatmaps(path: str | Path) -> Heatmaps:
    """Read a heatmap file (numpy only, no pickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise HeatmapError(f"the heatmap file {path.name} cannot be read ({exc})") from None
    raw = arrays.pop("meta", None)
    if raw is None:
        raise HeatmapError(f"the heatmap file {path.name} has no meta entry")
    raw = raw.item() if raw.shape == () else raw.tolist()
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except ValueError:
        raise HeatmapError(f"the heatmap file {path.name} has unreadable meta data") from None
    if int(meta.get("version", 0)) > HEATMAP_VERSION:
        raise HeatmapError(f"the heatmap file {path.name} is from a newer version (v{meta['version']})")
    arrays = {k: a for k, a in arrays.items() if a.ndim == 5 and "_" in k and k.rsplit("_", 1)[1].isdigit()}
    if not arrays:
        raise HeatmapError(f"the heatmap file {path.name} holds no maps")
    return Heatmaps(path, meta, arrays)


@dataclass(frozen=True)
class HeatmapChoice:
    prompt: str = "target"
    words: tuple[int, ...] = ()  # indices into the prompt's words (heatmaps.words(prompt))
    steps: int | tuple[int, int] | None = None  # one step, an inclusive range, or None: all steps
    resolution: int | None = None  # None: the largest
    layer: int | None = None  # index among the resolution's layers; None: their average
    normalise: str = "max"  # a key of NORMALISATIONS


def _token_maps(heatmaps: Heatmaps, choice: HeatmapChoice) -> np.ndarray:
    """(tokens, h, w): every token's map averaged over the chosen steps and layers."""
    resolution = choice.resolution or heatmaps.resolutions[0]
    array = heatmaps.array(choice.prompt, resolution)
    steps = choice.steps
    if steps is None:
        picked = array
    elif isinstance(steps, tuple):
        start, end = (min(max(int(s), 0), array.shape[0] - 1) for s in steps)
        picked = array[min(start, end) : max(start, end) + 1]
    else:
        picked = array[min(max(int(steps), 0), array.shape[0] - 1)][None]
    if choice.layer is not None:
        picked = picked[:, min(max(int(choice.layer), 0), array.shape[1] - 1)][:, None]
    return picked.astype(np.float32).mean(axis=(0, 1))


def _word_tokens(heatmaps: Heatmaps, prompt: str, index: int, token_count: int) -> list[int]:
    words = heatmaps.words(prompt)
    if not 0 <= index < len(words):
        return []
    return [t for t in words[index].get("tokens", []) if 0 <= t < token_count]


def attention_map(heatmaps: Heatmaps, choice: HeatmapChoice) -> tuple[np.ndarray, float]:
    """The chosen words' attention as one (h, w) map in 0…1, and what 1.0 stands for (a share of
    all the attention, 0…1). A word's map is the sum of its tokens' shares.

    - ``max``: each word to its own peak, then the brightest of them per pixel (1.0 = each word's
      own peak, so the scale returned is the weakest peak).
    - ``share``: the words' shares added, on one scale shared by every word of the prompt (1.0 =
      the peak of the prompt's strongest word), so a word that gets little attention looks dim."""
    tokens = _token_maps(heatmaps, choice)
    groups = [_word_tokens(heatmaps, choice.prompt, i, len(tokens)) for i in choice.words]
    groups = [g for g in groups if g]
    if not groups:
        return np.zeros(tokens.shape[1:], np.float32), 0.0
    maps = np.stack([tokens[g].sum(axis=0) for g in groups])
    if choice.normalise == "share":
        every_word = [_word_tokens(heatmaps, choice.prompt, i, len(tokens))
                      for i in range(len(heatmaps.words(choice.prompt)))]
        scale = max((float(tokens[g].sum(axis=0).max()) for g in every_word if g), default=0.0)
        scale = max(scale, float(maps.max()), 1e-8)
        return np.clip(maps.sum(axis=0) / scale, 0.0, 1.0), scale
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    scaled = maps / np.maximum(peaks, 1e-8)[:, None, None]
    return scaled.max(axis=0), float(peaks.min())


def upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float map → (height, width) of ``size = (width, height)``, bilinear."""
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in 0…1 → RGB ``uint8`` through the colour map."""
    index = np.clip(np.nan_to_num(values) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return COLORMAPS[cmap][index]


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.6, cmap: str = "inferno") -> np.ndarray:
    """The coloured map, upsampled to the picture, blended over it with ``alpha`` (0: picture only)."""
    height, width = image.shape[:2]
    colours = colorize(upsample(values, (width, height)), cmap).astype(np.float32)
    alpha = float(min(max(alpha, 0.0), 1.0))
    blended = image[..., :3].astype(np.float32) * (1.0 - alpha) + colours * alpha
    return blended.round().clip(0, 255).astype(np.uint8)


def enlarge(image: np.ndarray, min_side: int, smooth: bool = True) -> np.ndarray:
    """A small picture enlarged by a whole factor to at least ``min_side`` (model outputs of 64 px
    would otherwise carry a 16-pixel-wide heatmap); larger ones are returned as they are."""
    height, width = image.shape[:2]
    factor = -(-min_side // max(min(height, width), 1))
    if factor <= 1:
        return image
    resample = Image.Resampling.LANCZOS if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image[..., :3]).resize((width * factor, height * factor), resample))


def render_overlay(image: np.ndarray, heatmaps: Heatmaps, choice: HeatmapChoice, alpha: float = 0.6,
                   cmap: str = "inferno", min_side: int = 512, smooth: bool = True) -> tuple[np.ndarray, float]:
    """The picture (enlarged when small) with the chosen words' heatmap over it, and the scale."""
    values, scale = attention_map(heatmaps, choice)
    return overlay(enlarge(image, min_side, smooth), values, alpha, cmap), scale


def legend(cmap: str = "inferno", width: int = 256, height: int = 12) -> np.ndarray:
    """A horizontal colour bar, low on the left."""
    return np.repeat(colorize(np.linspace(0.0, 1.0, width), cmap)[None], height, axis=0)
