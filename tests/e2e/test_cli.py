"""The user CLI as a user runs it: real processes, the exit-code contract (0 ok, 1 failed, 2 bad input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

S2S = [sys.executable, "-m", "s2s_desktop.cli"]


def s2s(*args, timeout=180):
    return subprocess.run([*S2S, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_version():
    result = s2s("--version")
    assert result.returncode == 0 and result.stdout.startswith("s2s ")


def test_generate_from_a_folder_model(tiny_model_dir, tmp_path, isolated_home):
    out = tmp_path / "out"
    result = s2s("generate", "--model", tiny_model_dir, "--prompt", "a red star", "--seed", 3, "--steps", 4, "--out", out)
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert len(paths) == 1 and paths[0].parent == out.resolve()
    with Image.open(paths[0]) as image:
        assert "Seed: 3" in image.info["parameters"]
    assert "4/4" in result.stderr  # the progress bar
    # the engine's own log (its stderr) is kept, since its error hints point there
    engine_log = (isolated_home / "logs" / "cli-engine.log").read_text(encoding="utf-8")
    assert "[engine]" in engine_log and "ready" in engine_log


def test_an_error_hint_that_points_at_the_log_says_where_it_is(isolated_home):
    from s2s_desktop.cli_common import error_text

    text = error_text({"message": "RuntimeError: boom", "hint": "see the engine log for the traceback"})
    assert text.endswith(f"({isolated_home / 'logs' / 'cli-engine.log'})")
    assert error_text({"message": "no prompt", "hint": "give --prompt"}) == "no prompt — give --prompt"


def test_models_add_list_then_generate_with_active_model_json(tiny_model_dir, tiny_single_file, tmp_path):
    added = s2s("models", "add", tiny_single_file, "--config", tiny_model_dir, "--name", "tiny-file")
    assert added.returncode == 0, added.stderr
    listing = json.loads(s2s("models", "list", "--json").stdout)
    assert listing[0]["name"] == "Toy world (demo)" and listing[0]["active"] is False
    assert listing[1:] == [
        {"name": "tiny-file", "source": str(tiny_single_file), "kind": "single_file", "allow_pickle": False,
         "config": str(tiny_model_dir), "active": True}
    ]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a blue circle\n# a comment\n\na green heart\n", encoding="utf-8")
    result = s2s("generate", "--prompts", prompts, "--seed", 1, "--batch", 2, "--steps", 2, "--out", tmp_path / "o", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [(i["prompt"], i["seed"]) for i in summary["images"]] == [
        ("a blue circle", 1), ("a blue circle", 2), ("a green heart", 1), ("a green heart", 2)
    ]
    assert summary["failed"] == []


def test_bad_input_exits_2_with_a_message(tiny_model_dir, tmp_path):
    no_prompt = s2s("generate", "--model", tiny_model_dir, "--out", tmp_path)
    assert no_prompt.returncode == 2 and "prompt" in no_prompt.stderr
    bad_size = s2s("generate", "--model", tiny_model_dir, "--prompt", "x", "--width", 100, "--out", tmp_path)
    assert bad_size.returncode == 2 and "multiple of 8" in bad_size.stderr
    missing = s2s("generate", "--model", tmp_path / "nope", "--prompt", "x", "--out", tmp_path)
    assert missing.returncode == 2 and "neither an existing file" in missing.stderr
    both = s2s("generate", "--demo", "--model", tiny_model_dir, "--prompt", "x", "--out", tmp_path)
    assert both.returncode == 2 and "either --demo or --model" in both.stderr
    # a missing file is a wrong path, not a hub repo to download: say so, before any engine starts
    missing_file = s2s("models", "add", tmp_path / "gone" / "model.ckpt")
    assert missing_file.returncode == 2 and "no file or folder at" in missing_file.stderr
    assert "download" not in missing_file.stderr.split(":")[0]
    assert [m["name"] for m in json.loads(s2s("models", "list", "--json").stdout)] == ["Toy world (demo)"]


def test_pickle_checkpoint_refused_unless_opted_in(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not a model")
    refused = s2s("models", "add", ckpt)
    assert refused.returncode == 2
    assert "pickle" in refused.stderr and "arbitrary code" in refused.stderr
    assert [m["name"] for m in json.loads(s2s("models", "list", "--json").stdout)] == ["Toy world (demo)"]
    # opted in: it is no longer refused as a pickle (it then fails as the broken file it is)
    opted = s2s("models", "add", ckpt, "--allow-pickle")
    assert "arbitrary code" not in opted.stderr and opted.returncode != 0


@pytest.mark.parametrize("page", ["generate", "edit"])
def test_screenshot_renders_a_png(tmp_path, page):
    out = tmp_path / "shot.png"
    result = s2s("--screenshot", out, "--page", page)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 600
        assert len(image.convert("L").getcolors(maxcolors=100000) or []) > 20  # not a blank canvas


def test_generate_demo_works_offline_on_a_fresh_home(tmp_path):
    result = s2s("generate", "--demo", "--prompt", "a red star on a blue background", "--seed", 3, "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    [image] = json.loads(result.stdout)["images"]
    from engine.toy.scoring import score_caption

    with Image.open(image["path"]) as png:
        assert png.size == (64, 64) and "Model: Toy world (demo)" in png.info["parameters"]
        verdict = score_caption(np.asarray(png.convert("RGB")), "a red star on a blue background")
    assert verdict["colour_ok"], verdict


def test_default_model_on_first_run_is_the_toy_world(tmp_path):
    result = s2s("generate", "--prompt", "a green heart", "--steps", 5, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
