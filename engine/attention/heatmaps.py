"""The heatmap file of an edit: head-averaged cross-attention per prompt, resolution, step, layer
and token, float16, one ``.npz`` (format in ``engine.protocol.editing``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from engine.attention.processor import LayerInfo
from engine.protocol.editing import HEATMAP_VERSION


def stack_maps(maps: dict, layers: list[LayerInfo], steps: int, tokens: int) -> np.ndarray | None:
    """(step, layer) → (queries, tokens) tensors as one (steps, layers, tokens, h, w) array."""
    import torch

    if not layers or (0, layers[0].name) not in maps:
        return None
    h, w = layers[0].height, layers[0].width
    missing = None
    rows = []
    for step in range(steps):
        for layer in layers:
            value = maps.get((step, layer.name))
            if value is None:  # a step the source was not captured at: zeros, not a shifted stack
                missing = missing if missing is not None else torch.zeros_like(maps[(0, layers[0].name)])
                value = missing
            rows.append(value[:, :tokens])
    stacked = torch.stack(rows).to(torch.float16).cpu().numpy()  # (steps*layers, queries, tokens)
    return stacked.reshape(steps, len(layers), h, w, -1).transpose(0, 1, 4, 2, 3)


def write_heatmaps(
    path: Path,
    layers: dict[str, LayerInfo],
    resolutions: list[int],
    prompts: dict[str, tuple[dict, dict]],  # name → (tokenized prompt as JSON, maps)
    timesteps: list[int],
    size: tuple[int, int],
) -> Path:
    steps = len(timesteps)
    meta = {
        "version": HEATMAP_VERSION,
        "steps": steps,
        "timesteps": [int(t) for t in timesteps],
        "size": list(size),
        "resolutions": [],
        "layers": {},
        "prompts": {},
    }
    arrays = {}
    for res in resolutions:
        at_res = [x for x in layers.values() if x.cross and x.res == res]
        if not at_res:
            continue
        meta["resolutions"].append(res)
        meta["layers"][str(res)] = [x.name for x in at_res]
        for name, (prompt, maps) in prompts.items():
            stacked = stack_maps(maps, at_res, steps, len(prompt["tokens"]))
            if stacked is not None:
                arrays[f"{name}_{res}"] = stacked
                meta["prompts"][name] = prompt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp,  # uncompressed: float16 maps barely compress, and saving must not slow a render
                  meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_heatmaps(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return meta, {k: data[k] for k in data.files if k != "meta"}
