"""Stable-Diffusion-1.x diffusers weights → one original-layout (LDM/A1111) ``.safetensors`` file.

Hand-written because diffusers ships only the LDM→diffusers direction
(``diffusers.loaders.single_file_utils.convert_ldm_{unet,vae,clip}_checkpoint``); this module is
the exact inverse of those functions. Used for DreamBooth exports (``engine/train/export.py``) and by
tests that need an A1111/CompVis-style single file offline.

Key layout written (the one ``infer_diffusers_model_type`` classifies as ``"v1"``):

* ``model.diffusion_model.*``           UNet: time_embed, input_blocks.N.M, middle_block, output_blocks, out
* ``first_stage_model.*``               VAE: encoder/decoder down/up/mid, attention q/k/v/proj_out as
                                        1×1 conv weights, nin_shortcut, quant_conv, post_quant_conv
* ``cond_stage_model.transformer.*``    CLIP text encoder: ``text_model.*`` keys

Generic over the number of blocks and ``layers_per_block``, so it works for the tiny test model and
for a real SD 1.5 folder alike. Every tensor of the source must be mapped exactly once; anything
unexpected raises instead of being silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# Inverse of DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"].
_UNET_DIRECT = {
    "time_embedding.linear_1.weight": "time_embed.0.weight",
    "time_embedding.linear_1.bias": "time_embed.0.bias",
    "time_embedding.linear_2.weight": "time_embed.2.weight",
    "time_embedding.linear_2.bias": "time_embed.2.bias",
    "conv_in.weight": "input_blocks.0.0.weight",
    "conv_in.bias": "input_blocks.0.0.bias",
    "conv_norm_out.weight": "out.0.weight",
    "conv_norm_out.bias": "out.0.bias",
    "conv_out.weight": "out.2.weight",
    "conv_out.bias": "out.2.bias",
}

# Inverse of update_unet_resnet_ldm_to_diffusers (the leading name of the rest of the key).
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

# Inverse of DIFFUSERS_TO_LDM_MAPPING["vae"].
_VAE_DIRECT = {
    "encoder.conv_in.weight": "encoder.conv_in.weight",
    "encoder.conv_in.bias": "encoder.conv_in.bias",
    "encoder.conv_out.weight": "encoder.conv_out.weight",
    "encoder.conv_out.bias": "encoder.conv_out.bias",
    "encoder.conv_norm_out.weight": "encoder.norm_out.weight",
    "encoder.conv_norm_out.bias": "encoder.norm_out.bias",
    "decoder.conv_in.weight": "decoder.conv_in.weight",
    "decoder.conv_in.bias": "decoder.conv_in.bias",
    "decoder.conv_out.weight": "decoder.conv_out.weight",
    "decoder.conv_out.bias": "decoder.conv_out.bias",
    "decoder.conv_norm_out.weight": "decoder.norm_out.weight",
    "decoder.conv_norm_out.bias": "decoder.norm_out.bias",
    "quant_conv.weight": "quant_conv.weight",
    "quant_conv.bias": "quant_conv.bias",
    "post_quant_conv.weight": "post_quant_conv.weight",
    "post_quant_conv.bias": "post_quant_conv.bias",
}

# Inverse of update_vae_attentions_ldm_to_diffusers.
_VAE_ATTN_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_VAE_ATTN_CONV = {"q", "k", "v", "proj_out"}  # linear in diffusers, 1×1 conv in LDM


# --------------------------------------------------------------------------------------- loading


def _load_component(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of one diffusers/transformers component folder (single file, sharded, or .bin)."""
    for index_name in ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(folder / shard)))
            return state
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return load_file(str(folder / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return torch.load(folder / name, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no weights found in {folder}")


def _layers_per_block(unet_config: dict) -> int:
    lpb = unet_config["layers_per_block"]
    if isinstance(lpb, (list, tuple)):
        # LDM's input_blocks numbering (and diffusers' inverse) assumes one value for every block.
        if len(set(lpb)) != 1:
            raise ValueError(f"per-block layers_per_block {lpb} has no LDM single-file layout")
        lpb = lpb[0]
    return int(lpb)


# ------------------------------------------------------------------------------------------ UNet


def _unet_resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in _UNET_RESNET_PARTS:
        raise KeyError(f"unexpected UNet resnet parameter {rest!r}")
    return f"{_UNET_RESNET_PARTS[head]}.{tail}"


def convert_unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict → LDM ``diffusion_model`` keys (no prefix)."""
    for key in ("class_embed_type", "addition_embed_type", "num_class_embeds"):
        if config.get(key) is not None:
            raise ValueError(f"UNet with {key}={config[key]!r} is not an SD 1.x UNet")
    n = _layers_per_block(config)
    up_has_attn = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _UNET_DIRECT:
            new = _UNET_DIRECT[key]
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            new = f"input_blocks.{1 + b * (n + 1) + i}.0.{_unet_resnet_rest(rest)}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            b, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            new = f"input_blocks.{1 + b * (n + 1) + i}.1.{rest}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            b = int(m.group(1))
            new = f"input_blocks.{1 + b * (n + 1) + n}.0.op.{m.group(2)}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m.group(1))}.{_unet_resnet_rest(m.group(2))}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m.group(1)}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            new = f"output_blocks.{b * (n + 1) + i}.0.{_unet_resnet_rest(rest)}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            b, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            new = f"output_blocks.{b * (n + 1) + i}.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            b = int(m.group(1))
            slot = 2 if b in up_has_attn else 1  # after [resnet, attention] or after [resnet]
            new = f"output_blocks.{b * (n + 1) + n}.{slot}.conv.{m.group(2)}"
        else:
            raise KeyError(f"unexpected UNet parameter {key!r}")
        if new in out:
            raise KeyError(f"two UNet parameters map to {new!r}")
        out[new] = value
    return out


# ------------------------------------------------------------------------------------------- VAE


def _vae_attn(rest: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    for diff_part, ldm_part in _VAE_ATTN_PARTS.items():
        if rest.startswith(diff_part + "."):
            param = rest[len(diff_part) + 1 :]
            if ldm_part in _VAE_ATTN_CONV and param == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
            return f"{ldm_part}.{param}", value
    raise KeyError(f"unexpected VAE attention parameter {rest!r}")


def _vae_resnet_rest(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def convert_vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict → LDM ``first_stage_model`` keys (no prefix)."""
    num_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _VAE_DIRECT:
            new = _VAE_DIRECT[key]
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_vae_resnet_rest(m.group(3))}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            new = f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            # LDM numbers decoder up blocks from the lowest resolution up: reversed.
            b = num_up - 1 - int(m.group(1))
            new = f"decoder.up.{b}.block.{m.group(2)}.{_vae_resnet_rest(m.group(3))}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            b = num_up - 1 - int(m.group(1))
            new = f"decoder.up.{b}.upsample.conv.{m.group(2)}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_vae_resnet_rest(m.group(3))}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            rest, value = _vae_attn(m.group(2), value)
            new = f"{m.group(1)}.mid.attn_1.{rest}"
        else:
            raise KeyError(f"unexpected VAE parameter {key!r}")
        if new in out:
            raise KeyError(f"two VAE parameters map to {new!r}")
        out[new] = value
    return out


# ------------------------------------------------------------------------------------------- CLIP


def convert_clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel state dict → ``text_model.*`` keys (no ``cond_stage_model`` prefix).

    transformers ≥ 5.6 saves CLIPTextModel without the ``text_model.`` wrapper, older versions
    with it; the LDM file always has it.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a non-persistent buffer in current transformers; not a weight
        new = key if key.startswith("text_model.") else f"text_model.{key}"
        out[new] = value
    return out


# -------------------------------------------------------------------------------------------- API


def ldm_checkpoint(
    unet: dict[str, torch.Tensor], unet_config: dict,
    vae: dict[str, torch.Tensor], vae_config: dict,
    text_encoder: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Three diffusers/transformers state dicts → one LDM-layout checkpoint dict (CPU, contiguous)."""
    checkpoint: dict[str, torch.Tensor] = {}
    parts = (
        (UNET_PREFIX, convert_unet_to_ldm(unet, unet_config)),
        (VAE_PREFIX, convert_vae_to_ldm(vae, vae_config)),
        (CLIP_PREFIX, convert_clip_to_ldm(text_encoder)),
    )
    for prefix, part in parts:
        for key, value in part.items():
            checkpoint[prefix + key] = value.detach().cpu().contiguous()
    return checkpoint


def save_atomic(tensors: dict[str, torch.Tensor], out_path: Path, metadata: dict[str, str] | None = None) -> Path:
    """safetensors ``save_file`` to a temp name, then rename: a crash never leaves half a file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def save_pipeline_single_file(pipe, out_path: Path) -> Path:
    """Write a loaded SD 1.x pipeline's UNet, VAE and text encoder as one LDM-layout file."""
    checkpoint = ldm_checkpoint(
        pipe.unet.state_dict(), dict(pipe.unet.config),
        pipe.vae.state_dict(), dict(pipe.vae.config),
        pipe.text_encoder.state_dict(),
    )
    return save_atomic(checkpoint, out_path, {"format": "pt"})


def export_ldm_single_file(diffusers_folder: Path, out_path: Path) -> Path:
    """Write the UNet, VAE and text encoder of an SD 1.x diffusers folder as one LDM-layout file.

    Tokenizer, scheduler and configs are not stored (as in A1111 checkpoints): load the result with
    ``StableDiffusionPipeline.from_single_file(out_path, config=diffusers_folder, ...)``.
    """
    folder = Path(diffusers_folder)
    checkpoint = ldm_checkpoint(
        _load_component(folder / "unet"), json.loads((folder / "unet" / "config.json").read_text()),
        _load_component(folder / "vae"), json.loads((folder / "vae" / "config.json").read_text()),
        _load_component(folder / "text_encoder"),
    )
    return save_atomic(checkpoint, out_path, {"format": "pt"})
