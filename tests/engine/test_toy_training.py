"""The toy-world training script: from scratch, then the VAE-only markings stage on a warm start."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from engine.toy import world
from engine.toy.train_toy import main


def _weights(folder, part):
    name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
    return load_file(str(folder / part / name))


def test_marked_scenes_carry_markings_and_new_colours():
    scenes = [world.sample_marked_scene(np.random.default_rng([3, i])) for i in range(200)]
    objects = [obj for scene in scenes for obj in scene.objects]
    patterns = {obj.pattern for obj in objects}
    assert patterns == {None, "dots", "stripes", "face"}
    off_palette = [obj for obj in objects if obj.rgb is not None and obj.rgb not in world.COLOURS.values()]
    assert 0.25 < len(off_palette) / len(objects) < 0.55


def test_smoke_training_then_markings_stage_keeps_the_unet(tmp_path):
    base, marked = tmp_path / "base", tmp_path / "marked"
    smoke = ["--preset", "smoke", "--out", str(base), "--work-dir", str(tmp_path / "work"), "--device", "cpu",
             "--set", "background_caption_share=0.5", "high_noise_share=0.5"]
    assert main(smoke) == 0
    assert (base / "model_index.json").exists()

    args = ["--preset", "vae-markings", "--init-from", str(base), "--out", str(marked),
            "--work-dir", str(tmp_path / "work"), "--device", "cpu",
            "--set", "n_scenes=64", "vae_steps=12", "vae_batch=8", "checkpoint_every=5"]
    assert main(args) == 0

    # The UNet and text encoder are the warm start's, bit for bit; only the VAE learned.
    for part in ("unet", "text_encoder"):
        before, after = _weights(base, part), _weights(marked, part)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), part
    vae_before, vae_after = _weights(base, "vae"), _weights(marked, "vae")
    assert any(not torch.equal(vae_before[k], vae_after[k]) for k in vae_before)
    # the scale the UNet was trained with is kept
    scale = lambda folder: json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"]  # noqa: E731
    assert scale(marked) == scale(base)

    record = json.loads((marked / "toy_world.json").read_text())
    assert [stage.get("stage") for stage in record["stages"]] == ["smoke", "vae-markings"]
    last = record["stages"][-1]
    assert last["config"]["vae_anchor_weight"] == 0.2 and last["config"]["unet_steps"] == 0
    assert last["vae_steps_run"] == 12 and last["unet_steps_run"] == 0
    assert last["command"].startswith("python -m engine.toy.train_toy --preset vae-markings")
