"""The batch edit's Qt-free model: each picture's edit job, the form's change carried to another
prompt, the states of a cancelled batch."""

from __future__ import annotations

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from s2s_desktop.edit_batch import (
    CANCELLED,
    DONE,
    FAILED,
    SKIPPED,
    EditBatch,
    carry_edit,
    picture_params,
    pictures_in,
)

BASE = {"source_prompt": "a red star on a blue background", "target_prompt": "a green star on a blue background",
        "negative_prompt": "", "image": "", "seed": 5, "steps": 20, "guidance": 7.5, "mode": "auto",
        "cross_steps": 0.8, "self_steps": 0.4, "blend_threshold": 0.3, "heatmaps": True, "out_dir": "/tmp/x",
        "width": 96, "height": 96}


def made_here(path, prompt: str, seed: int) -> str:
    info = PngInfo()
    info.add_text("parameters", f"{prompt}\nSteps: 30, Sampler: DDIM, CFG scale: 6, Seed: {seed}, Size: 64x64")
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return str(path)


def test_the_forms_change_is_carried_to_another_prompt():
    source, target = "a red star on a blue background", "a green star on a blue background"
    assert carry_edit(source, target, source) == (target, True)
    assert carry_edit(source, target, "a red heart on a white background") == ("a green heart on a white background", True)
    assert carry_edit(source, target, "a yellow heart") == ("a yellow heart", False)
    assert carry_edit("a star", "a big star", "a star on grass") == ("a big star on grass", True)  # an added word
    assert carry_edit(source, "", "anything") == ("", True)  # no target: the picture as it is


def test_each_picture_gets_its_own_job(tmp_path):
    made = made_here(tmp_path / "made.png", "a red heart on a white background", 42)
    params, how = picture_params(BASE, made)
    assert how == "regenerated" and params["seed"] == 42 and params["steps"] == 30 and params["guidance"] == 6.0
    assert params["target_prompt"] == "a green heart on a white background" and (params["width"], params["height"]) == (64, 64)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 60)).save(photo)
    params, how = picture_params(BASE, str(photo))
    assert how == "inverted" and params["image"] == str(photo) and params["invert"] == "direct"
    assert "width" not in params and params["target_prompt"] == BASE["target_prompt"]
    insertion = {"into": "star", "token": "<dotty>", "class_noun": "star"}
    params, _ = picture_params(BASE, made_here(tmp_path / "s.png", "a star on grass", 1), insertion=insertion)
    assert params["target_prompt"] == "a <dotty> star on grass"


def test_a_batch_runs_in_order_and_a_cancel_keeps_what_finished(tmp_path):
    pictures = [made_here(tmp_path / f"{n}.png", "a red star on a blue background", n) for n in range(3)]
    pictures.append(made_here(tmp_path / "x.png", "a purple circle", 9))  # the change does not fit it
    batch = EditBatch.build(pictures, BASE)
    assert batch.items[3].state == FAILED and "does not fit" in batch.items[3].error
    assert batch.next_index() == 0
    batch.start(0)
    batch.finish(0, {"edited": "e.png", "original": "o.png"})
    batch.start(1)
    batch.cancel()
    assert batch.next_index() is None and not batch.over
    batch.end_cancelled(1)
    assert [i.state for i in batch.items] == [DONE, CANCELLED, SKIPPED, FAILED] and batch.over
    assert batch.summary() == "1 of 4 pictures edited, 1 failed, 1 cancelled, 1 not started."
    (tmp_path / "notes.txt").write_text("x")
    assert [p.rsplit("/", 1)[-1] for p in pictures_in(tmp_path)] == ["0.png", "1.png", "2.png", "x.png"]
