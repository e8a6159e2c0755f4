"""Which files a hub download fetches: the choice alone, no server, no hub library."""

from __future__ import annotations

import pytest

from engine.jobs import JobFailed
from engine.models.hub_files import plan_files, weight_variant

SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD15_FILES = [  # the layout of stable-diffusion-v1-5/stable-diffusion-v1-5
    ".gitattributes",
    "README.md",
    "model_index.json",
    "v1-5-pruned-emaonly.ckpt",
    "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned.ckpt",
    "v1-5-pruned.safetensors",
    "v1-inference.yaml",
    "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json",
    "safety_checker/model.fp16.safetensors",
    "safety_checker/model.safetensors",
    "safety_checker/pytorch_model.bin",
    "safety_checker/pytorch_model.fp16.bin",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/pytorch_model.bin",
    "text_encoder/pytorch_model.fp16.bin",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.bin",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]


def test_plan_for_an_sd15_layout():
    plan = plan_files("sd/v15", {p: 10 for p in SD15_FILES}, SD15_INDEX)
    assert plan.files[0] == "model_index.json"
    assert set(plan.files) == {
        "model_index.json",
        "feature_extractor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    }
    assert plan.total_bytes == 10 * len(plan.files)


def test_plan_keeps_plain_shards_and_their_index():
    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00001.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.bin.index.json",
    ]
    plan = plan_files("a/b", dict.fromkeys(files), {"unet": ["diffusers", "UNet2DConditionModel"]})
    assert plan.files[0] == "model_index.json"
    assert set(plan.files) == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
    }


@pytest.mark.parametrize(
    "weights, expected",
    [
        (["unet/diffusion_pytorch_model.bin"], "not available as .safetensors"),
        (["unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin"], "fp16"),
    ],
)
def test_plan_refuses_components_without_plain_safetensors(weights, expected):
    files = dict.fromkeys(["model_index.json", "unet/config.json", *weights], 1)
    with pytest.raises(JobFailed) as info:
        plan_files("a/b", files, {"unet": ["diffusers", "UNet2DConditionModel"]})
    assert expected in info.value.message


def test_weight_variant_names():
    assert weight_variant("unet/diffusion_pytorch_model.safetensors") is None
    assert weight_variant("text_encoder/model-00001-of-00002.safetensors") is None
    assert weight_variant("unet/diffusion_pytorch_model.fp16.safetensors") == "fp16"
    assert weight_variant("unet/diffusion_pytorch_model.non_ema.safetensors") == "non_ema"
    assert weight_variant("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors") == "fp16"
