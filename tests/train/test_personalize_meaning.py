"""Meaning check for personalisation: after training on the toy subject Dotty, does the model draw it?

The same measurement as `python -m benchmarks.toy_personalize` (which reports all four methods):
the toy preset, 8 rendered photos, 32 fixed seeds scored by the toy evaluator.
"""

from __future__ import annotations

import pytest

from benchmarks.toy_personalize import run_method, score_pipeline
from engine.protocol.training import fill_prompt, preset
from engine.toy.subjects import get_subject

SEEDS = list(range(1000, 1032))

# each trains a toy run (100-370 s on 2 cores) and scores 64 images: more than the suite's 300 s default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def base_scores(toy_loaded):
    subject = get_subject("Dotty")
    prompt = fill_prompt(preset("lora", 8, "cpu", toy=True)["instance_prompt"], subject.token, subject.class_noun)
    return score_pipeline(toy_loaded.pipeline, subject, prompt, SEEDS)


def test_dreambooth_draws_the_subject_and_the_base_model_does_not(toy_loaded, base_scores, tmp_path):
    base = base_scores
    trained = run_method(toy_loaded, "dreambooth", "Dotty", SEEDS, tmp_path)
    assert base["subject_rate"] <= 0.1, base  # measured 0 of 32
    assert trained["subject_rate"] >= 0.6, trained  # measured 72% (bar 70%: benchmarks.toy_personalize)
    # Prior preservation: the bar (within 10 points of the base's class accuracy) is not met
    # by the toy preset yet (measured 66% against the base's 100%); this floor keeps it from getting worse.
    assert trained["class_accuracy"] >= base["class_accuracy"] - 0.45, (base, trained)


def test_lora_on_the_convolutions_draws_the_subject_and_keeps_the_class(toy_loaded, base_scores, tmp_path):
    """The toy preset's LoRA (rank 32 on the ResNet convolutions and feed-forward layers)."""
    base = base_scores
    trained = run_method(toy_loaded, "lora", "Dotty", SEEDS, tmp_path)
    assert base["subject_rate"] <= 0.1, base
    assert trained["subject_rate"] >= 0.65, trained  # measured 75% (bar 70%)
    # measured 88% against the base's 100% (the bar, within 10 points, is missed by one seed in 32)
    assert trained["class_accuracy"] >= base["class_accuracy"] - 0.2, (base, trained)
    # Putting it into pictures (issue 23), with the insertion defaults: "a red star on a … background"
    # → "a <dotty-star> star …", 4 scenes x 4 seeds, the run on the edited branch only.
    from eval.edit_meaning import EditSession
    from eval.insertion_meaning import measure

    inserted = measure(EditSession(out_dir=tmp_path / "edits"), str(tmp_path / "lora" / "exports"),
                       get_subject("Dotty"), [0, 1, 2, 3])
    summary = {k: v for k, v in inserted.items() if k != "rows"}
    # The bars (>= 70% subject, IoU >= 0.7, >= 25 dB) are not met yet: measured over 3
    # training seeds x 32 edits (benchmarks/results/insertion-sweep-cpu.md): subject 26% / 19% / 10%, IoU median 0.64,
    # 30-31 dB outside.
    # These floors keep it from getting worse; the base model draws the subject in 0 of them.
    assert inserted["n"] >= 12, summary
    assert inserted["subject_rate"] >= 0.05, summary
    assert inserted["iou_median"] >= 0.5 and inserted["psnr_outside_median"] >= 25, summary


def test_pivotal_draws_the_subject_and_keeps_the_class(toy_loaded, base_scores, tmp_path):
    """The toy preset's pivotal tuning: the same LoRA, plus a word that starts as the identifier's pieces."""
    base = base_scores
    trained = run_method(toy_loaded, "pivotal", "Dotty", SEEDS, tmp_path)
    assert trained["subject_rate"] >= 0.65, trained  # measured 72% (bar 70%)
    # measured 88% against the base's 100% (the bar, within 10 points, is missed by one seed in 32)
    assert trained["class_accuracy"] >= base["class_accuracy"] - 0.2, (base, trained)
