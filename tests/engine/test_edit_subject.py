"""Putting a trained subject into a picture: a run's exports go onto the loaded model (LoRA scale,
new words) without reloading it, only the target branch gets the run (the source stays the
picture being edited), and a word swap to the subject's token keeps the layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eval.edit_meaning import DEFAULT_MODEL, EditSession, find, rgb
from tests.train.conftest import dotty_photos, make_trainer, tiny_config, toy_loaded  # noqa: F401

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").exists(), reason="toy model not present")
SOURCE = "a orange star on a white background"
TARGET = "a <dotty-star> star on a white background"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return EditSession(out_dir=tmp_path_factory.mktemp("subject-edits"))


@pytest.fixture
def exports(make_trainer, tmp_path):  # noqa: F811
    def train(method: str, **overrides):
        trainer = make_trainer(method, run_dir=tmp_path / method, steps=30, prior=False, **overrides)
        trainer.run()
        return str(tmp_path / method / "exports")

    return train


def pixels(result: dict, key: str = "edited") -> np.ndarray:
    return np.asarray(Image.open(result[key])).astype(int)


def test_lora_scale_zero_is_the_base_model_and_removal_restores_it(session, exports):
    folder = exports("lora", learning_rate=5e-3)
    plain = session.edit(source_prompt=SOURCE, seed=1)
    off = session.edit(source_prompt=SOURCE, seed=1, adapter={"folder": folder, "scale": 0.0})
    on = session.edit(source_prompt=SOURCE, seed=1, adapter={"folder": folder, "scale": 1.0})
    back = session.edit(source_prompt=SOURCE, seed=1)
    assert np.abs(pixels(off) - pixels(plain)).max() <= 1
    assert np.abs(pixels(on) - pixels(plain)).mean() > 1.0  # the LoRA changes the picture
    assert np.array_equal(pixels(back), pixels(plain))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a - b).max()) <= 1  # within 1/255


def test_the_source_branch_stays_the_base_models_picture(session, exports):
    """Build 1 of issue 23: with target = source and the LoRA at scale 0 the edit is the plain
    picture; with the LoRA on, the original is still the plain picture (generated and inverted)."""
    folder = exports("lora", learning_rate=5e-3)
    plain = session.edit(source_prompt=SOURCE, seed=1)
    off = session.edit(source_prompt=SOURCE, seed=1, adapter={"folder": folder, "scale": 0.0})
    assert off["subject_branch"] == "target"
    assert close(pixels(off), pixels(plain, "original")) and close(pixels(off, "original"), pixels(plain, "original"))
    on = session.edit(source_prompt=SOURCE, target_prompt=TARGET, seed=1, adapter={"folder": folder, "scale": 1.0})
    assert on["subject_branch"] == "target" and on["mode"] == "replace"
    assert close(pixels(on, "original"), pixels(plain, "original"))
    assert np.abs(pixels(on) - pixels(on, "original")).mean() > 1.0  # the target branch did change
    # a LoRA strength change replays the recorded (plain) source branch
    stronger = session.edit(source_prompt=SOURCE, target_prompt=TARGET, seed=1, adapter={"folder": folder, "scale": 1.5})
    assert stronger["reused_source"] and close(pixels(stronger, "original"), pixels(plain, "original"))
    # an inverted photo: its reconstruction is the base model's, with the run on or off
    photo = plain["original"]
    bare = session.edit(source_prompt=SOURCE, image=photo)
    put_in = session.edit(source_prompt=SOURCE, target_prompt=TARGET, image=photo, adapter={"folder": folder, "scale": 1.0})
    assert close(pixels(put_in, "reconstruction"), pixels(bare, "reconstruction"))
    # a source that names the subject's word was drawn with the run: both branches get it
    named = session.edit(source_prompt=TARGET, seed=1, adapter={"folder": folder, "scale": 1.0})
    assert named["subject_branch"] == "both"


def test_a_dreambooth_subject_draws_the_target_against_the_base_models_source(session, exports):
    folder = exports("dreambooth", learning_rate=1e-3)
    plain = session.edit(source_prompt=SOURCE, seed=2)
    first = session.edit(source_prompt=SOURCE, target_prompt=TARGET, seed=2, adapter={"folder": folder})
    assert first["subject_branch"] == "target" and not first["reused_source"]
    assert close(pixels(first, "original"), pixels(plain, "original"))
    assert np.abs(pixels(first) - pixels(first, "original")).mean() > 1.0
    again = session.edit(source_prompt=SOURCE, target_prompt=TARGET, seed=2, adapter={"folder": folder},
                         reweight={"star": 1.5})
    assert again["reused_source"]


def test_subject_swap_runs_on_the_trained_word(session, exports):
    """The mechanics of "put my subject in": the run's new word is a word of the strip, the swap is a
    word-for-word replace, and the object changes (what it becomes: test_insertion_meaning.py)."""
    folder = exports("pivotal", learning_rate=1e-3, embedding_learning_rate=5e-2)
    for seed in (2, 3, 4, 5):  # judge a seed where the base model drew the source
        result = session.edit(source_prompt=SOURCE, target_prompt=TARGET, seed=seed, blend_words=["star"],
                              adapter={"folder": folder, "scale": 1.0})
        before = find(rgb(result["original"]), "orange")
        if before is not None:
            break
    assert before is not None, "no seed of 2-5 drew the orange star with the adapter on"
    assert result["mode"] == "replace" and not result["notes"]
    assert [w["word"] for w in result["target_words"]][1] == "<dotty-star>"
    changed = np.abs(pixels(result) - pixels(result, "original"))[before.mask].mean()
    assert changed > 10


def test_a_folder_that_is_not_a_run_is_refused(session, tmp_path):
    from engine.jobs import JobFailed

    with pytest.raises(JobFailed) as refused:
        session.edit(source_prompt=SOURCE, adapter={"folder": str(tmp_path), "scale": 1.0})
    assert refused.value.code == "bad_adapter" and "finished" in refused.value.hint
