"""``s2s evaluate --insertion`` as a user runs it, on the toy-world model: a trained run put into
generated pictures and into a folder of pictures, its scores with their sample counts and reasons."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from engine.toy import world
from tests.e2e.test_cli import s2s
from tests.e2e.test_cli_train import TINY


def test_insertion_scores_of_a_run_then_the_report(tmp_path, isolated_home):
    assert s2s("subjects", "add-demo", "--count", 4).returncode == 0
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(TINY, sample_every=0)))
    trained = s2s("train", "Dotty", "--method", "lora", "--demo", "--config", config, "--no-prior")
    assert trained.returncode == 0, trained.stderr

    exported = tmp_path / "report"
    result = s2s("evaluate", "--insertion", "--demo", "--subject", "Dotty", "--run", "1", "--seeds", "0",
                 "--into", "red", "--steps", "6", "--export", exported, "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["kind"] == "insertion" and table["complete"] and len(table["sources"]) == 4  # 4 backgrounds × 1 seed
    assert table["sources"][0]["target"] == "a <dotty-star> star on a blue background"
    [row] = table["rows"]
    assert row["column"] == "run1" and len(row["edits"]) == 4
    scores = row["scores"]
    assert scores["subject_rate"]["n"] == 4 and 0.0 <= scores["subject_rate"]["value"] <= 1.0
    assert scores["clip_i"]["n"] == 4  # the toy CLIP against Dotty's 4 photos
    assert "DINO" in scores["structure"]["unavailable"]  # offline: a reason, never another model's number
    assert scores["lpips_outside"]["value"] is None and scores["lpips_outside"]["unavailable"]
    assert {p.name for p in exported.iterdir()} == {"insertion.csv", "insertion.md", "insertion-report.html"}
    markdown = (exported / "insertion.md").read_text(encoding="utf-8")
    assert "| Run | Subject in (toy) ↑" in markdown and "Structure dist. not available" in markdown
    assert "| 4 |" in markdown  # the sample count column
    page = (exported / "insertion-report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64") == 8  # 4 sources: each original and its edit
    folder = isolated_home / "subjects" / "0001-dotty" / "insertion"
    assert len(list(folder.glob("*/run1/s0?-edited.png"))) == 4  # kept in the subject's folder


def test_pictures_from_a_folder_are_inverted_and_bad_requests_exit_2(tmp_path, isolated_home):
    assert s2s("subjects", "add-demo", "--count", 2).returncode == 0
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(TINY, sample_every=0, steps=2)))
    assert s2s("train", "Smiley", "--method", "lora", "--demo", "--config", config, "--no-prior").returncode == 0
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    scene = world.Scene([world.ToyObject("square", "red", 0.5, 0.5, 0.3)], "white", "a red square on a white background")
    Image.fromarray(world.render(scene, 64)[0]).save(pictures / "photo.jpg")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(pictures / "gray.png")

    no_prompt = s2s("evaluate", "--insertion", "--demo", "--subject", "Smiley", "--run", "1", "--images", pictures)
    assert no_prompt.returncode == 2 and "carries no prompt" in no_prompt.stderr
    both = s2s("evaluate", "--insertion", "--demo", "--subject", "Smiley", "--run", "1", "--images", pictures,
               "--seeds", "0-1")
    assert both.returncode == 2 and "not both" in both.stderr
    no_run = s2s("evaluate", "--insertion", "--demo", "--subject", "Smiley")
    assert no_run.returncode == 2 and "at least one finished run" in no_run.stderr
    unknown = s2s("evaluate", "--insertion", "--demo", "--subject", "Smiley", "--run", "1", "--metrics", "fid")
    assert unknown.returncode == 2 and "unknown insertion metric" in unknown.stderr

    result = s2s("evaluate", "--insertion", "--demo", "--subject", "Smiley", "--run", "1", "--images", pictures,
                 "--prompt", "a red square on a white background", "--metrics", "subject_rate,psnr_outside",
                 "--steps", "4")
    assert result.returncode == 0, result.stderr
    assert "| Run | Subject in (toy) ↑ | PSNR outside ↑ | n |" in result.stdout
    assert "2 source picture(s), 2 of them inverted photos" in result.stdout
    assert "(photo.jpg, inverted) → a red <smiley-square> square on a white background" in result.stdout
