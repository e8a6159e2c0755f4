"""Prompt-to-Prompt's attention control: one controller that stores, replaces, refines, reweights
and locally blends, driven by the one attention processor (``processor.py``).

The UNet runs a batch of prompts with classifier-free guidance: rows ``[uncond…, cond…]``. Only the
conditional half is edited (as in Prompt-to-Prompt). Three row layouts:
    pair    [source, target]            first edit: the source is computed beside the target
    source  [source]                    heatmaps of a picture as it is
    target  [target]                    re-render: the source's attention comes from a SourceRecord

Written by hand: diffusers has no Prompt-to-Prompt controller (its community pipeline is a
notebook port that can neither reuse a cached source branch nor record heatmaps compactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.attention.processor import LayerInfo

# Prompt-to-Prompt injects self-attention only where maps are at most 32×32 (SD at 512²: all but
# the finest level), which keeps layout without copying fine texture and bounds the memory.
MAX_SELF_QUERIES = 32 * 32
BLEND_START = 0.2  # local blend starts after this share of the steps (P2P's default)


def window(schedule, steps: int) -> tuple[int, int]:
    """A schedule (fraction from the start, or [start, end]) as a half-open step range."""
    start, end = (0.0, schedule) if isinstance(schedule, (int, float)) else schedule
    return int(round(start * steps)), int(round(end * steps))


@dataclass
class EditSpec:
    """What the target branch gets, resolved to token positions and per-step switches."""

    mode: str  # "replace" | "refine" | "same"
    cross_alpha: torch.Tensor  # (steps, 77): 1 where the source's cross-attention is injected
    self_window: tuple[int, int]
    equalizer: torch.Tensor  # (77,): per-token reweight factor on the target
    replace_matrix: torch.Tensor | None = None  # (77, 77) for replace
    refine_mapper: torch.Tensor | None = None  # (77,) source index per target token
    refine_alphas: torch.Tensor | None = None  # (77,) 1 copy, 0 new word
    blend_source: list[int] = field(default_factory=list)  # token positions of the blend words
    blend_target: list[int] = field(default_factory=list)
    blend_threshold: float = 0.3
    blend_res: int | None = None

    @property
    def needs_self(self) -> bool:
        return self.self_window[1] > self.self_window[0]

    def injected_until(self) -> tuple[int, int]:
        """The steps (exclusive ends) up to which source cross- and self-attention are injected."""
        injected = self.cross_alpha.any(dim=1).nonzero()
        cross_end = int(injected.max()) + 1 if len(injected) else 0
        return cross_end, (self.self_window[1] if self.needs_self else 0)


@dataclass
class SourceRecord:
    """Everything the target branch needs from the source branch, per step: its latents after the
    step, its conditional attention probabilities on the edited layers, its head-averaged maps."""

    probs: dict = field(default_factory=dict)  # (step, layer) → (heads, queries, 77)
    maps: dict = field(default_factory=dict)  # (step, layer) → (queries, tokens) source, cond
    negative_maps: dict = field(default_factory=dict)  # (step, layer) → (queries, tokens) uncond
    latents: list = field(default_factory=list)  # source latent after each step
    cross_until: int = 0  # cross-attention probs are kept for steps < cross_until
    self_until: int = 0  # self-attention probs are kept for steps < self_until
    nbytes: int = 0
    source_image: object = None  # the decoded source picture

    def covers(self, spec: EditSpec | None) -> bool:
        """Whether a re-render with ``spec`` finds every source step it injects."""
        if spec is None:
            return True
        cross_end, self_end = spec.injected_until()
        return self.cross_until >= cross_end and self.self_until >= self_end


class EditController:
    def __init__(
        self,
        layers: dict[str, LayerInfo],
        rows: str,
        spec: EditSpec | None,
        capture_res: set[int],
        token_counts: tuple[int, int, int],  # source, target, negative (0: none) — BOS … EOS
        guided: bool,
        record: SourceRecord | None = None,
        replay: SourceRecord | None = None,
    ):
        self.layers, self.rows, self.spec, self.guided = layers, rows, spec, guided
        self.capture_res = set(capture_res)
        self.token_counts = token_counts
        self.record, self.replay = record, replay
        self.step = 0
        self.target_maps: dict = {}  # (step, layer) → (queries, tokens)
        # The source's maps live in the record being made, or come from the one replayed.
        keeper = record if record is not None else replay
        self.source_maps: dict = keeper.maps if keeper is not None else {}
        self.negative_maps: dict = keeper.negative_maps if keeper is not None else {}
        self._blend_sum: torch.Tensor | None = None  # running sum of blend-resolution maps
        # Per step, decided once: whether any / every token takes the source's cross-attention.
        self._injects = spec.cross_alpha.any(dim=1).tolist() if spec is not None else []
        self._whole_prompt = spec.cross_alpha.all(dim=1).tolist() if spec is not None else []
        self._tables: dict = {}

    # ------------------------------------------------------------------ which layers need control
    def controlled_layers(self) -> list[str]:
        """Layers that go through the explicit processor; the rest keep the fast fused attention."""
        editing = self.spec is not None and self.rows != "source"
        self_needed = (editing and self.spec.needs_self) or (self.record is not None and self.record.self_until > 0)
        names = []
        for info in self.layers.values():
            if info.cross and (editing or self.record is not None or info.res in self.capture_res):
                names.append(info.name)
            elif not info.cross and self_needed and info.queries <= MAX_SELF_QUERIES:
                names.append(info.name)
        return names

    def active(self, layer: str) -> bool:
        """Whether ``layer`` needs explicit attention at the current step (else the fused kernel)."""
        info = self.layers[layer]
        if info.cross:
            return True  # controlled cross layers capture, record or edit at every step
        step = self.step
        if self.record is not None and step < self.record.self_until:
            return True
        if self.spec is None or self.rows == "source":
            return False
        start, end = self.spec.self_window
        return start <= step < end and (self.rows == "pair" or (self.step, layer) in self.replay.probs)

    # ------------------------------------------------------------------ the processor's callback
    def on_probs(self, layer: str, probs: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
        info = self.layers[layer]
        view = probs.view(batch, heads, probs.shape[1], probs.shape[2])
        half = batch // 2 if self.guided else 0
        cond = view[half:]
        step = self.step
        if self.rows == "target":
            source = self.replay.probs.get((step, layer)) if self.replay is not None else None
            target_row = 0
        else:
            source = cond[0]
            target_row = 1 if self.rows == "pair" else None
            record = self.record
            if record is not None and step < (record.cross_until if info.cross else record.self_until):
                kept = source.clone()
                record.probs[(step, layer)] = kept
                record.nbytes += kept.numel() * kept.element_size()
        if info.cross and info.res in self.capture_res:
            self._capture(step, layer, view, half)
        if target_row is not None and self.spec is not None and source is not None:
            target = cond[target_row]
            if info.cross:
                cond[target_row] = self._edit_cross(source, target, step)
            elif self.spec.self_window[0] <= step < self.spec.self_window[1]:
                cond[target_row] = source
        return probs

    def _edit_cross(self, source: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        spec = self.spec
        if not self._injects[step]:
            return target
        tables = self._tables.get(source.dtype)
        if tables is None:  # the spec's tensors on the model's device and dtype, once per edit
            move = lambda t: None if t is None else t.to(source.device, source.dtype)  # noqa: E731
            tables = self._tables[source.dtype] = (
                move(spec.cross_alpha), move(spec.replace_matrix), move(spec.refine_alphas),
                None if spec.refine_mapper is None else spec.refine_mapper.to(source.device),
                None if bool(spec.equalizer.eq(1).all()) else move(spec.equalizer),
            )
        alphas, matrix, keep, mapper, equalizer = tables
        if spec.mode == "replace":
            mapped = torch.einsum("hqs,st->hqt", source, matrix)
        elif spec.mode == "refine":
            mapped = source[..., mapper] * keep + target * (1 - keep)
        else:
            mapped = source
        if equalizer is not None:
            mapped = mapped * equalizer
        if self._whole_prompt[step]:  # every token injected this step: no mixing needed
            return mapped
        alpha = alphas[step]
        return mapped * alpha + target * (1 - alpha)

    def _capture(self, step: int, layer: str, view: torch.Tensor, half: int) -> None:
        n_source, n_target, n_negative = self.token_counts
        cond = view[half:].mean(dim=1)  # heads averaged: (rows, queries, 77)
        if self.rows in ("pair", "source"):
            self._keep(self.source_maps, (step, layer), cond[0, :, :n_source])
            if n_negative and half:
                self._keep(self.negative_maps, (step, layer), view[0].mean(dim=0)[:, :n_negative])
        if self.rows in ("pair", "target"):
            self.target_maps[(step, layer)] = cond[-1, :, :n_target]

    def _keep(self, store: dict, key: tuple, value: torch.Tensor) -> None:
        # kept as computed (float16 on GPUs); the heatmap file converts once, at the end
        store[key] = value
        if self.record is not None:
            self.record.nbytes += value.numel() * value.element_size()

    # ------------------------------------------------------------------ local blend (after a step)
    def blend(self, latents: torch.Tensor, source_latent: torch.Tensor, steps: int) -> torch.Tensor:
        """Keep the target equal to the source outside the blend words' area (P2P's local blend:
        the words' maps at ~16×16, summed over the steps so far, dilated 3×3, normalised, thresholded,
        the source's and the target's areas unioned)."""
        spec = self.spec
        if spec is None or spec.blend_res is None or not (spec.blend_source or spec.blend_target):
            return latents
        layers = [x for x in self.layers.values() if x.cross and x.res == spec.blend_res]
        masks = []
        for maps, positions in ((self.source_maps, spec.blend_source), (self.target_maps, spec.blend_target)):
            if not positions:
                continue
            grids = [maps[(self.step, x.name)][:, positions].float().sum(-1).view(x.height, x.width) for x in layers]
            masks.append(torch.stack(grids).mean(0))
        current = torch.stack(masks)  # (n, h, w) this step's maps
        self._blend_sum = current if self._blend_sum is None else self._blend_sum + current
        if self.step < int(BLEND_START * steps):
            return latents
        area = F.max_pool2d(self._blend_sum[:, None], 3, stride=1, padding=1)
        area = F.interpolate(area, size=latents.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        area = area / area.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        mask = (area > spec.blend_threshold).any(0).to(latents.dtype)
        return source_latent + mask * (latents - source_latent)
