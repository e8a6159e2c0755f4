"""The LDM single-file exporter (tests/helpers/ldm_export.py) round-trips exactly through diffusers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from engine.models.tiny import save_tiny_pipeline
from tests.helpers.ldm_export import (
    CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    convert_unet_to_ldm,
    convert_vae_to_ldm,
    export_ldm_single_file,
)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, name: str) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys(), f"{name}: parameter names differ: {sorted(pa.keys() ^ pb.keys())}"
    for key, value in pa.items():
        other = pb[key]
        assert other.device.type != "meta", f"{name}.{key} was not loaded (meta tensor)"
        assert value.dtype == other.dtype and value.shape == other.shape, f"{name}.{key}"
        assert torch.equal(value, other), f"{name}.{key} differs after the round trip"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    tmp = tmp_path_factory.mktemp("ldm_export")
    folder = save_tiny_pipeline(tmp / "tiny")
    file = export_ldm_single_file(folder, tmp / "tiny.safetensors")
    original = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, safety_checker=None
    )
    single = StableDiffusionPipeline.from_single_file(
        str(file), config=str(folder), local_files_only=True, safety_checker=None
    )
    return folder, file, original, single


def test_file_has_ldm_layout_and_is_detected_as_sd1(exported):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    _, file, _, _ = exported
    checkpoint = load_file(str(file))
    assert infer_diffusers_model_type(checkpoint) == "v1"
    prefixes = (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)
    assert all(k.startswith(prefixes) for k in checkpoint)
    for key in (
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.1.1.conv.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.downsample.conv.weight",
        "first_stage_model.decoder.up.2.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        "first_stage_model.quant_conv.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    ):
        assert key in checkpoint, key
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in checkpoint
    for part in ("q", "k", "v", "proj_out"):
        assert checkpoint[f"first_stage_model.decoder.mid.attn_1.{part}.weight"].ndim == 4


def test_single_file_weights_equal_the_diffusers_folder(exported):
    _, _, original, single = exported
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(original, name), getattr(single, name), name)


def test_single_file_generates_identical_pixels(exported):
    _, _, original, single = exported
    images = []
    for pipe in (original, single):
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            "a photo of a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(123),
            output_type="np",
        )
        images.append(out.images)
    assert images[0].shape == (1, 64, 64, 3)
    assert (images[0] == images[1]).all()


def test_sd15_shaped_layout_inverts_diffusers_converters():
    """Same block structure as real SD 1.5 (4 levels, 2 layers per block), tiny channels: the
    exported keys hit the real SD 1.5 landmarks and diffusers' own converters give them back."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        layers_per_block=2,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=8,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 8, 8, 8),
        layers_per_block=2,
        norm_num_groups=4,
    )
    unet_sd, vae_sd = unet.state_dict(), vae.state_dict()
    ldm_unet = convert_unet_to_ldm(unet_sd, dict(unet.config))
    ldm_vae = convert_vae_to_ldm(vae_sd, dict(vae.config))
    checkpoint = {UNET_PREFIX + k: v for k, v in ldm_unet.items()}
    checkpoint.update({VAE_PREFIX + k: v for k, v in ldm_vae.items()})

    assert CHECKPOINT_KEY_NAMES["v1"] in checkpoint
    assert infer_diffusers_model_type(checkpoint) == "v1"
    for key in (  # as in v1-5-pruned-emaonly.safetensors
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.9.0.op.weight",
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.8.2.conv.weight",
        "model.diffusion_model.output_blocks.11.1.proj_out.weight",
        "first_stage_model.encoder.down.2.downsample.conv.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.decoder.up.0.block.2.conv2.weight",
    ):
        assert key in checkpoint, key
    assert "model.diffusion_model.input_blocks.12.0.op.weight" not in checkpoint
    assert "model.diffusion_model.output_blocks.11.2.conv.weight" not in checkpoint

    back_unet = convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    back_vae = convert_ldm_vae_checkpoint(checkpoint, dict(vae.config))
    for original, back in ((unet_sd, back_unet), (vae_sd, back_vae)):
        assert original.keys() == back.keys()
        for key, value in original.items():
            assert torch.equal(value, back[key]), key
