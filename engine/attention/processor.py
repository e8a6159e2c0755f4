"""The one attention processor: explicit softmax(QKᵀ/√d) so a controller can see (and later edit)
the cross-attention probabilities of chosen layers.

Layers nobody watches keep diffusers' default fast attention (explicit attention everywhere costs
1.15-2.9× on a small model). Written by hand because diffusers' processors never expose the
probabilities; the arithmetic follows diffusers' ``AttnProcessor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class AttentionController(Protocol):
    def on_probs(self, layer: str, probs, batch: int, heads: int):
        """Called with probs of shape (batch*heads, queries, keys); returns the probs to use."""


class ControlledAttnProcessor:
    def __init__(self, controller: AttentionController, layer: str):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.controller = controller
        self.layer = layer
        self.fast = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        import torch

        # A controller may need a layer only at some steps (self-attention is injected early only).
        active = getattr(self.controller, "active", None)
        if active is not None and not active(self.layer):
            return self.fast(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)
        probs = self.controller.on_probs(self.layer, probs, batch, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@dataclass(frozen=True)
class LayerInfo:
    name: str  # module path, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    cross: bool  # attn2 (text → image) vs attn1 (image → image)
    level: int  # 0 = the UNet's finest resolution
    res: int  # the name users know it by: the map size at the model's native size (SD1.5: 64/32/16/8)
    height: int  # attention-map grid for a given latent size
    width: int

    @property
    def queries(self) -> int:
        return self.height * self.width


def _level(unet, name: str) -> int:
    """Resolution level of an attention module, from its block's position in the UNet."""
    parts = name.split(".")
    levels = len(unet.config.block_out_channels)
    if parts[0] == "mid_block":
        return levels - 1
    index = int(parts[1])
    return index if parts[0] == "down_blocks" else levels - 1 - index


def attention_layers(unet, latent_height: int, latent_width: int) -> dict[str, LayerInfo]:
    """Every attention module of the UNet with its map size for latents of the given size."""
    layers = {}
    for name, _ in unet.named_modules():
        if name.endswith(("attn1", "attn2")):
            level = _level(unet, name)
            layers[name] = LayerInfo(
                name,
                name.endswith("attn2"),
                level,
                unet.config.sample_size // 2**level,
                -(-latent_height // 2**level),
                -(-latent_width // 2**level),
            )
    return layers


def cross_attention_layers(unet, resolution: int | None = None) -> list[str]:
    """Names of the cross-attention (attn2) modules, optionally only those at a latent resolution
    (e.g. 16 for 16×16 maps) for the UNet's native sample size."""
    size = unet.config.sample_size
    layers = attention_layers(unet, size, size).values()
    return [x.name for x in layers if x.cross and (resolution is None or x.res == resolution)]


def install(unet, controller: AttentionController, layers: list[str]) -> None:
    """Route ``layers`` through the controlled processor; every other layer keeps its own."""
    processors = dict(unet.attn_processors)  # a copy: set_attn_processor empties the dict it gets
    for key in processors:
        layer = key.removesuffix(".processor")
        if layer in layers:
            processors[key] = ControlledAttnProcessor(controller, layer)
    unet.set_attn_processor(processors)


def uninstall(unet) -> None:
    """Back to diffusers' fused scaled-dot-product attention everywhere."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
