"""From an edit job's parameters to what the attention controller acts on: the token maps,
per-step injection switches, reweight factors, blend words, and which maps to keep."""

from __future__ import annotations

import torch

from engine.attention.align import TokenizedPrompt, refine_map, replace_map
from engine.attention.controller import MAX_SELF_QUERIES, EditSpec, window
from engine.attention.processor import LayerInfo

TOKENS = 77


def build_spec(params: dict, mode: str, source: TokenizedPrompt, target: TokenizedPrompt, steps: int,
               notes: list[str]) -> EditSpec:
    start, end = window(params["cross_steps"], steps)
    cross_alpha = torch.zeros(steps, TOKENS)
    cross_alpha[start:end] = 1.0
    for word, schedule in (params["word_cross_steps"] or {}).items():
        positions = target.positions_of(word)
        if not positions:
            notes.append(f"'{word}' is not in the target prompt; its schedule was not used")
            continue
        word_start, word_end = window(schedule, steps)
        cross_alpha[:, positions] = 0.0
        cross_alpha[word_start:word_end, positions] = 1.0
    equalizer = torch.ones(TOKENS)
    for word, factor in (params["reweight"] or {}).items():
        positions = target.positions_of(word)
        if not positions:
            notes.append(f"'{word}' is not in the target prompt; it was not reweighted")
        equalizer[positions] = float(factor)
    spec = EditSpec(mode, cross_alpha, window(params["self_steps"], steps), equalizer)
    if mode == "replace":
        spec.replace_matrix = torch.tensor(replace_map(source, target, TOKENS))
    elif mode == "refine":
        mapper, alphas = refine_map(source, target, TOKENS)
        spec.refine_mapper, spec.refine_alphas = torch.tensor(mapper), torch.tensor(alphas)
    for word in params["blend_words"] or []:
        in_source, in_target = source.positions_of(word), target.positions_of(word)
        if not (in_source or in_target):
            notes.append(f"blend word '{word}' is in neither prompt; it was not used")
        spec.blend_source += in_source
        spec.blend_target += in_target
    spec.blend_threshold = float(params["blend_threshold"])
    return spec


def blend_resolution(layers: dict[str, LayerInfo]) -> int:
    """Local blend reads ~16×16 maps (coarse enough to be whole objects): 16 when the model has
    them, else the finest cross-attention resolution at most 32."""
    available = sorted({x.res for x in layers.values() if x.cross})
    if 16 in available:
        return 16
    small = [r for r in available if r <= 32]
    return small[-1] if small else available[0]


def capture_resolutions(layers: dict[str, LayerInfo], heatmaps: bool, editing: bool) -> set[int]:
    """Maps kept per step: the two finest cross-attention resolutions up to 32×32 for the heatmap
    file (SD1.5: 32 and 16; the toy model: 16 and 8), and the blend resolution when editing (an edit
    records it for the local blends of later re-renders)."""
    keep = {blend_resolution(layers)} if editing else set()
    if heatmaps:
        available = sorted({x.res for x in layers.values() if x.cross and x.res <= 32}, reverse=True)
        keep.update(available[:2])
    return keep


def record_bytes(unet, layers: dict[str, LayerInfo], cross_until: int, self_until: int, element_size: int) -> int:
    """What recording the source branch costs: cross-attention probs and self-attention probs
    (≤ 32×32 maps) for the steps they are injected at."""
    total = 0
    for info in layers.values():
        heads = unet.get_submodule(info.name).heads
        if info.cross:
            total += heads * info.queries * TOKENS * cross_until
        elif info.queries <= MAX_SELF_QUERIES:
            total += heads * info.queries * info.queries * self_until
    return total * element_size

