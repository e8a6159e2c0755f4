"""Prompt-to-Prompt meaning checks on the toy world (the issue's bars, on a few seeds; the full
table is ``python -m eval.edit_meaning``, numbers in the README)."""

from __future__ import annotations

import pytest

from eval import edit_meaning
from eval.edit_meaning import DEFAULT_MODEL, EditSession

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").exists(), reason="toy model not present")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return EditSession(out_dir=tmp_path_factory.mktemp("meaning"))


def test_word_swap_changes_the_colour_and_keeps_the_layout(session):
    # measured on these 4 seeds: IoU median 0.80; over seeds 0-23: 0.84 (the bar, 0.8, is judged
    # there), 31.5 dB outside
    report = edit_meaning.word_swap(session, [0, 1, 2, 4])
    assert report["n"] >= 3
    assert report["green_rate"] == 1.0
    assert report["iou_median"] >= 0.75
    assert report["psnr_outside_median"] >= 25.0


def test_each_noun_heatmap_sits_on_its_own_object(session):
    report = edit_meaning.heatmap_localisation(session, 3)
    assert report["n"] >= 4
    assert report["own_over_other_median"] >= 2.0 and report["share_at_least_2x"] >= 0.75


def test_factor_one_on_the_same_prompt_reproduces_the_plain_generation(session):
    assert edit_meaning.identity(session, [0, 1])["max_abs_pixel_difference"] <= 1


def test_a_negative_weight_on_a_colour_word_removes_its_colour(session):
    """Measured over 24 pictures: saturation 0.07 at -2, 0.83 at 0, 0.88 at 1, 0.90 at 3 — the toy
    world has one palette colour per word, so factors above 1 have no "more red" to reach."""
    report = edit_meaning.reweight_saturation(session, [0], factors=(-2.0, 1.0))
    assert report["n"] >= 2
    assert report["saturation_at_-2"] < report["saturation_at_1"] - 0.3


def test_direct_inversion_reconstructs_up_to_the_autoencoder_and_beats_ddim(session):
    report = edit_meaning.inversion(session, 2, nulltext_images=0)
    assert report["direct_psnr_mean"] >= report["vae_psnr_mean"] - 0.05
    assert report["direct_minus_ddim_min"] >= 3.0
