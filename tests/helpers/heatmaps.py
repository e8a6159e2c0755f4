"""Handcrafted heatmap files in the engine's format (engine.protocol.editing), with hot spots where
a test puts them: the GUI's heatmap arithmetic is checked against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def blob(size: int, centre: tuple[float, float], width: float = 0.12) -> np.ndarray:
    """A Gaussian bump at ``centre`` = (row, column) in fractions of the map."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = rows / size - centre[0], cols / size - centre[1]
    return np.exp(-(dx**2 + dy**2) / (2 * width**2))


def write_heatmaps(path: Path, prompts: dict[str, str], hot: dict[tuple[str, int], tuple[float, float]],
                   strength: dict[tuple[str, int], float] | None = None, steps: int = 4,
                   layers: dict[int, int] | None = None, step_scale: list[float] | None = None,
                   size: tuple[int, int] = (64, 64)) -> Path:
    """One token per word (plus BOS and EOS). ``hot[(prompt, word)] = (row, col)`` gives that word a
    bump there with peak share ``strength`` (default 0.5); BOS takes what is left, as in CLIP.
    ``step_scale[s]`` multiplies every word's share at step s (to tell steps apart); layer l of a
    resolution moves the bump right by l/8 of the map (to tell layers apart)."""
    strength = strength or {}
    layers = layers or {8: 2, 4: 1}
    step_scale = step_scale or [1.0] * steps
    meta_prompts, arrays = {}, {}
    for prompt, text in prompts.items():
        words = text.split()
        tokens = ["<|startoftext|>", *[w.lower() + "</w>" for w in words], "<|endoftext|>"]
        meta_prompts[prompt] = {"text": text, "tokens": tokens,
                                "words": [{"word": w, "tokens": [i + 1]} for i, w in enumerate(words)]}
        for resolution, layer_count in layers.items():
            array = np.zeros((steps, layer_count, len(tokens), resolution, resolution), np.float32)
            for step in range(steps):
                for layer in range(layer_count):
                    for index in range(len(words)):
                        if (prompt, index) in hot:
                            row, col = hot[(prompt, index)]
                            bump = blob(resolution, (row, col + layer / 8))
                            peak = strength.get((prompt, index), 0.5) * step_scale[step]
                            array[step, layer, index + 1] = bump / bump.max() * peak
                    words_total = array[step, layer, 1:-1].sum(axis=0)
                    array[step, layer, -1] = 0.02
                    array[step, layer, 0] = np.clip(1.0 - 0.02 - words_total, 0.0, 1.0)
            arrays[f"{prompt}_{resolution}"] = array.astype(np.float16)
    meta = {
        "version": 1, "steps": steps, "timesteps": list(range(999, 0, -999 // steps))[:steps],
        "size": list(size), "resolutions": sorted(layers, reverse=True),
        "layers": {str(r): [f"down_blocks.{i}.attentions.0" for i in range(n)] for r, n in layers.items()},
        "prompts": meta_prompts,
    }
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    return path
