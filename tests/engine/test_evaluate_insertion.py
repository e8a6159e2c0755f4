"""The insertion evaluation on the real toy-world model: each run × source picture goes through the
real insertion edit, and every score comes with its sample count, or "not available" with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.jobs import Job, JobCancelled, JobContext
from engine.protocol import validate_job
from engine.protocol.insertion import INSERTION_METRICS, INSERTION_NAME, default_source_prompts
from tests.train.conftest import TOY, dotty_photos, make_trainer, toy_loaded  # noqa: F401

pytestmark = pytest.mark.skipif(not (TOY / "model_index.json").exists(), reason="toy model not present")
TOY_CLIP = TOY.parent / "toy-clip"
STEPS = 8


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    """A tiny random ViT: not a real DINO, but the structure-distance code path end to end."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("dino")
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def state(toy_loaded):  # noqa: F811  (the trainer's loaded model, shared: one load per session)
    from engine.models.registry import ModelCache
    from engine.server import EngineState

    state = EngineState(device_preference="cpu")
    state.models = ModelCache()
    state.models.current = toy_loaded
    return state


@pytest.fixture
def lora_run(make_trainer, tmp_path):  # noqa: F811
    trainer = make_trainer("lora", run_dir=tmp_path / "lora", steps=6, prior=False, learning_rate=5e-3)
    trainer.run()
    return str(tmp_path / "lora" / "exports")


def job_params(tmp_path, runs, photos, **extra) -> dict:
    params = {
        "token": "<dotty-star>", "class_noun": "star", "into": "red", "runs": runs,
        "sources": [{"prompt": p, "seed": 1} for p in default_source_prompts("star", toy=True)[:2]],
        "real_images": photos, "toy_subject": "Dotty", "steps": STEPS,
        "feature_models": {"clip": str(TOY_CLIP)} if (TOY_CLIP / "config.json").is_file() else None,
        "out_dir": str(tmp_path / "insertion"),
    }
    params.update(extra)
    return validate_job("evaluate_insertion", params)


def run(params, state, cancel_after_edits: int | None = None):
    from engine.evaluate_insertion import run_evaluate_insertion_job

    events: list[dict] = []
    job = Job("evaluate_insertion", params)

    def emit(event):
        events.append(event)
        edits_done = (event.get("step") or 0) // 100
        if cancel_after_edits is not None and event.get("event") == "progress" and edits_done >= cancel_after_edits:
            job.cancel_requested.set()

    return run_evaluate_insertion_job(params, JobContext(job, emit, max_rate=1e9), state), events


def test_scores_per_run_on_the_toy_world(state, lora_run, dotty_photos, dino_dir, tmp_path):  # noqa: F811
    runs = [{"key": "base", "label": "Base model", "adapter": None},
            {"key": "run1", "label": "#1 LoRA", "adapter": {"folder": lora_run, "scale": 1.5}}]
    params = job_params(tmp_path, runs, dotty_photos,
                        feature_models={"dino": str(dino_dir), **({"clip": str(TOY_CLIP)} if TOY_CLIP.is_dir() else {})})
    result, events = run(params, state)
    assert result["complete"] and [r["column"] for r in result["rows"]] == ["base", "run1"]
    assert [m["name"] for m in result["metrics"]] == list(INSERTION_METRICS)
    assert result["sources"][0]["target"] == "a <dotty-star> star on a blue background"
    for row in result["rows"]:
        scores = row["scores"]
        assert len(row["edits"]) == 2
        assert scores["subject_rate"]["n"] == 2 and 0.0 <= scores["subject_rate"]["value"] <= 1.0
        found = sum(e["object_found"] for e in row["edits"])
        if found:  # IoU and the outside only where the evaluator found the red star to replace
            assert scores["object_iou"]["n"] == found and 0.0 <= scores["object_iou"]["value"] <= 1.0
            assert scores["psnr_outside"]["n"] == found and scores["psnr_outside"]["value"] > 15
        assert scores["structure"]["n"] == 2 and scores["structure"]["value"] >= 0.0  # the tiny ViT, ×10³
        assert "LPIPS" in scores["lpips_outside"]["unavailable"]  # offline: no torchvision backbone
        if TOY_CLIP.is_dir():
            assert scores["clip_i"]["n"] == 2 and -1.0 <= scores["clip_i"]["value"] <= 1.0
        for edit in row["edits"]:  # the pictures the report shows
            for key in ("original", "edited"):
                assert (Path(params["out_dir"]) / edit[key]).is_file()
            if edit["area"]:
                assert Image.open(Path(params["out_dir"]) / edit["area"]).size == (64, 64)
    # the base model never saw Dotty: it cannot draw her; the run's edit changes the picture
    assert result["rows"][0]["scores"]["subject_rate"]["value"] == 0.0
    base_edit, run_edit = (np.asarray(Image.open(Path(params["out_dir"]) / r["edits"][0]["edited"])).astype(int)
                           for r in result["rows"])
    assert np.abs(base_edit - run_edit).mean() > 1.0
    stored = json.loads((Path(params["out_dir"]) / INSERTION_NAME).read_text(encoding="utf-8"))
    assert stored["rows"][1]["scores"] == result["rows"][1]["scores"] and stored["kind"] == "insertion"
    progress = [e for e in events if e["event"] == "progress"]
    steps = [e["step"] for e in progress]
    assert steps == sorted(steps) and steps[-1] == progress[-1]["total"]  # one bar: 4 edits, then the scores
    assert {e.get("phase") for e in progress} >= {"editing", "scoring"} and events[-1]["event"] == "artifact"


def test_a_non_toy_subject_is_scored_on_the_attention_area(state, lora_run, tmp_path):
    runs = [{"key": "run1", "label": "#1 LoRA", "adapter": {"folder": lora_run, "scale": 1.0}}]
    params = job_params(tmp_path, runs, [], toy_subject="", into="", metrics=["subject_rate", "psnr_outside",
                                                                             "clip_i", "structure"])
    result, _ = run(params, state)
    scores = result["rows"][0]["scores"]
    assert "toy world's evaluator" in scores["subject_rate"]["unavailable"]
    assert "no photos" in scores["clip_i"]["unavailable"]
    assert "DINO" in scores["structure"]["unavailable"]  # facebook/dino-vits16 is not here offline
    assert scores["psnr_outside"]["n"] == 2 and scores["psnr_outside"]["value"] > 10
    assert result["sources"][0]["target"] == "a red <dotty-star> star on a blue background"  # into: the noun
    assert "cross-attention" in result["area"]
    folder = Path(params["out_dir"])
    for edit in result["rows"][0]["edits"]:
        area = np.asarray(Image.open(folder / edit["area"])) > 127
        assert 0 < area.mean() < 1  # the object's attention: some of the picture, not all of it
    assert not list(folder.rglob("*-heatmaps.npz"))  # read for the area, then removed


def test_cancel_keeps_the_edits_made_so_far(state, lora_run, tmp_path):
    runs = [{"key": "run1", "label": "#1", "adapter": {"folder": lora_run, "scale": 1.5}},
            {"key": "run2", "label": "#2", "adapter": {"folder": lora_run, "scale": 0.5}}]
    params = job_params(tmp_path, runs, [], metrics=["subject_rate", "psnr_outside"])
    with pytest.raises(JobCancelled):
        run(params, state, cancel_after_edits=1)
    partial = json.loads((Path(params["out_dir"]) / INSERTION_NAME).read_text(encoding="utf-8"))
    assert partial["complete"] is False
    first, second = partial["rows"]
    assert 1 <= len(first["edits"]) <= 2 and first["scores"]["subject_rate"]["n"] == len(first["edits"])
    assert second["edits"] == [] and "cancelled" in second["scores"]["subject_rate"]["unavailable"]


def test_a_prompt_without_the_word_is_refused_before_any_edit(state, tmp_path):
    from engine.jobs import JobFailed

    params = job_params(tmp_path, [{"key": "base", "adapter": None}], [], into="moon")
    with pytest.raises(JobFailed) as refused:
        run(params, state)
    assert refused.value.code == "invalid_params" and "moon" in refused.value.message
    assert not (Path(params["out_dir"]) / INSERTION_NAME).exists()
