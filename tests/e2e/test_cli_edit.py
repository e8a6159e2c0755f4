"""``s2s edit`` as a user runs it, on the shipped toy-world model."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from engine.toy import world
from tests.e2e.test_cli import s2s

SOURCE, TARGET = "a red star on a blue background", "a green star on a blue background"


def test_word_swap_writes_the_pictures_and_the_history(tmp_path, isolated_home):
    out = tmp_path / "out"
    result = s2s("edit", "--demo", "--source", SOURCE, "--target", TARGET, "--seed", "2", "--steps", "12",
                 "--blend", "star", "--word-steps", "green=0.6", "--reweight", "green=1.5", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "replace" and summary["notes"] == []
    for key in ("original", "edited", "heatmaps"):
        assert (out / summary[key].split("/")[-1]).exists()
    assert "12/12" in result.stderr  # the progress bar
    with np.load(summary["heatmaps"]) as maps:
        assert maps["target_16"].shape[:1] == (12,)
    from s2s_desktop.library.catalog import Library
    from s2s_desktop.library.edits import list_edits

    library = Library(isolated_home)
    try:
        [kept] = list_edits(library)
        assert kept.target_prompt == TARGET and kept.file == summary["edited"]
    finally:
        library.close()


def test_photo_is_inverted_and_its_reconstruction_reported(tmp_path, isolated_home):
    scene = world.Scene([world.ToyObject("circle", "yellow", 0.5, 0.5, 0.25)], "gray", "a yellow circle on a gray background")
    pixels, _ = world.render(scene, 128)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(photo, quality=95)
    result = s2s("edit", "--demo", "--image", photo, "--source", scene.caption, "--target",
                 "a yellow circle on a gray background with stripes", "--steps", "10", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "refine" and summary["reconstruction_psnr"] > 20
    assert Image.open(summary["reconstruction"]).size == (64, 64)


def test_bad_input_exits_2_with_a_reason(tmp_path, isolated_home):
    for args, reason in (
        (["--reweight", "green"], "WORD=FACTOR"),
        (["--reweight", "green=9"], "-2 to 5"),
        (["--cross-steps", "0.9,0.2"], "start ≤ end"),
        (["--image", tmp_path / "missing.png"], "no such file"),
        (["--run", "3"], "--subject NAME and --run"),
    ):
        result = s2s("edit", "--demo", "--source", SOURCE, "--out", tmp_path, *args)
        assert result.returncode == 2 and reason in result.stderr, (args, result.stderr)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    result = s2s("edit", "--demo", "--source", SOURCE, "--image", broken, "--steps", "4", "--out", tmp_path)
    assert result.returncode == 2 and "cannot read the image" in result.stderr


def test_put_a_subject_into_a_picture_and_into_a_folder_of_them(tmp_path, isolated_home):
    """`s2s edit --subject S --run R`: the class noun becomes the subject's token, the run draws
    only the edited branch; `--batch` does a folder (a PNG the app made regenerates from its own
    prompt and seed, another picture is inverted with --source) and writes the grid."""
    from tests.e2e.test_cli_train import _subject

    config = _subject(tmp_path)
    token = json.loads(s2s("subjects", "list", "--json").stdout)["subjects"][0]["token"]
    assert s2s("train", "Biscuit", "--method", "lora", "--demo", "--config", config).returncode == 0
    one = s2s("edit", "--demo", "--subject", "Biscuit", "--run", "1", "--source", SOURCE, "--seed", "2",
              "--steps", "6", "--out", tmp_path / "one", "--json")
    assert one.returncode == 0, one.stderr
    result = json.loads(one.stdout)
    assert result["subject_branch"] == "target" and result["mode"] == "refine"  # "star" → "<token> star"
    assert [w["word"] for w in result["target_words"]][1:4] == ["red", token, "star"]
    plain = s2s("edit", "--demo", "--source", SOURCE, "--seed", "2", "--steps", "6", "--out", tmp_path / "plain",
                "--json")
    original = np.asarray(Image.open(json.loads(plain.stdout)["original"])).astype(int)
    assert np.abs(np.asarray(Image.open(result["original"])).astype(int) - original).max() <= 1
    assert "no word 'moon'" in s2s("edit", "--demo", "--subject", "Biscuit", "--run", "1", "--source", SOURCE,
                                    "--into", "moon", "--out", tmp_path).stderr

    folder = tmp_path / "pictures"
    folder.mkdir()
    made_here = f"{SOURCE}\nSteps: 6, Sampler: DDIM, CFG scale: 7.5, Seed: 2, Size: 64x64"  # as generate writes it
    Image.open(result["original"]).save(folder / "made-here.png", pnginfo=_parameters(made_here))
    Image.fromarray(world.render(world.sample_scene(np.random.default_rng(3), 1))[0]).save(folder / "photo.jpg")
    no_prompt = s2s("edit", "--demo", "--subject", "Biscuit", "--run", "1", "--batch", folder, "--out", tmp_path)
    assert no_prompt.returncode == 2 and "photo.jpg carries no prompt" in no_prompt.stderr
    batch = s2s("edit", "--demo", "--subject", "Biscuit", "--run", "1", "--batch", folder, "--source", SOURCE,
                "--into", "red", "--steps", "6", "--out", tmp_path / "batch", "--json")
    assert batch.returncode == 0, batch.stderr
    results = json.loads(batch.stdout)
    assert len(results) == 2 and all(r["subject_branch"] == "target" for r in results)
    assert results[0]["reconstruction"] == ""  # made here: regenerated from its seed, not inverted
    assert results[1]["reconstruction"]  # the JPEG was inverted
    grid = Image.open(tmp_path / "batch" / "insertion-grid.png")
    assert grid.size == (512, 512) and "2 of 2 pictures edited" in batch.stderr


def _parameters(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info
