"""``s2s train`` as a user runs it, on the shipped toy-world model."""

from __future__ import annotations

import json

from PIL import Image

from tests.e2e.test_cli import s2s

TINY = {
    "steps": 4, "class_images": 2, "class_image_steps": 2, "sample_every": 2, "sample_steps": 2,
    "sample_seeds": [0], "sample_prompts": ["a photo of {token}"], "checkpoint_every": 2, "batch": 2,
}


def _subject(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, colour in enumerate(["red", "blue", "green", "orange"]):
        Image.new("RGB", (300, 280), colour).save(folder / f"{i}.png")
    assert s2s("subjects", "add", "Biscuit", "--class", "star", folder).returncode == 0
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    return config


def test_train_lora_records_the_run_and_prints_exports(tmp_path, isolated_home):
    config = _subject(tmp_path)
    shown = s2s("train", "Biscuit", "--method", "lora", "--demo", "--show-config")
    assert shown.returncode == 0 and json.loads(shown.stdout)["learning_rate"] > 0
    preflight = s2s("train", "Biscuit", "--method", "lora", "--demo", "--config", config, "--preflight")
    assert preflight.returncode == 0, preflight.stderr
    assert "s/step" in preflight.stdout and "ETA" in preflight.stdout
    result = s2s("train", "Biscuit", "--method", "lora", "--demo", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["step"] == 4 and summary["run"] == 1  # the preflight added no run
    assert "4/4" in result.stderr  # the progress bar
    run_folder = isolated_home / "subjects" / "0001-biscuit" / "runs" / "0001-lora"
    assert (run_folder / "checkpoints" / "step-000004" / "state.json").is_file()
    assert sorted(p.name for p in (run_folder / "samples").iterdir())[:1] == ["step-000000-p0-s0.png"]
    assert len(list((run_folder / "data").glob("*.png"))) == 4  # the crops it trained on


def test_train_refuses_bad_input_with_exit_2(tmp_path):
    config = _subject(tmp_path)
    unknown = s2s("train", "Nobody", "--demo")
    assert unknown.returncode == 2 and "no subject called" in unknown.stderr
    bad = s2s("train", "Biscuit", "--demo", "--steps", "0")
    assert bad.returncode == 2 and "steps" in bad.stderr
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"stepz": 3}))
    assert "unknown field" in s2s("train", "Biscuit", "--demo", "--config", typo).stderr
    assert config.exists()


def test_export_launch_writes_a_run_file_that_headless_reads(tmp_path):
    from engine.protocol.training import read_launch

    config = _subject(tmp_path)
    result = s2s("train", "Biscuit", "--method", "ti", "--demo", "--config", config, "--export-launch", tmp_path / "launch")
    assert result.returncode == 0, result.stderr
    assert "accelerate launch --multi_gpu" in result.stdout and "engine.train.headless" in result.stdout
    model, job = read_launch(tmp_path / "launch" / "run.json")
    assert job["method"] == "ti" and job["token"] == "<sks-star>" and len(job["images"]) == 4
    assert model["source"].endswith("toy-world")
