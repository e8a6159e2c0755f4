"""The training loop on the real toy-world model: what changes, checkpoints, cancel, NaN, preflight."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from engine.jobs import JobCancelled, JobFailed
from engine.train import checkpoint


def _base_state(loaded):
    return {
        **{f"unet.{k}": v.clone() for k, v in loaded.pipeline.unet.state_dict().items()},
        **{f"te.{k}": v.clone() for k, v in loaded.pipeline.text_encoder.state_dict().items()},
    }


@pytest.mark.parametrize("method, layers", [
    ("lora", "attention"), ("lora", "all"), ("ti", None), ("pivotal", "convolutions"), ("dreambooth", None),
])
def test_every_method_trains_and_leaves_the_base_model_bitwise_unchanged(make_trainer, toy_loaded, method, layers):
    before = _base_state(toy_loaded)
    trainer = make_trainer(method, **({"lora_layers": layers} if layers else {}))
    seen = {}

    def inspect(tr):
        t = tr.trainables
        seen["trainable"] = sum(p.numel() for p in t.parameters())
        wrapped = [(n, m) for n, m in t.unet.named_modules() if hasattr(m, "lora_A")]
        seen["lora_kinds"] = {type(m.get_base_layer()).__name__ for _, m in wrapped}
        seen["lora_on_attention"] = any(".attn" in n for n, _ in wrapped)
        if t.token_ids:
            weight = t.text_encoder.get_input_embeddings().weight
            original = toy_loaded.pipeline.text_encoder.get_input_embeddings().weight
            rows = original.shape[0]
            changed = (weight[:rows] != original).any(dim=1).nonzero().flatten().tolist()
            seen["changed_rows"] = changed
            seen["token_ids"] = list(t.token_ids)

    trainer.on_trained = inspect
    result = trainer.run()
    assert result["step"] == 6 and result["final_loss"] > 0
    kinds = [e.get("kind") for e in trainer.events if e["event"] == "artifact"]
    assert kinds.count("checkpoint") == 3 and kinds.count("sample") == 2  # step 0 baseline and the end
    after = _base_state(toy_loaded)
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared base model changed"
    assert not any("lora" in k for k in toy_loaded.pipeline.unet.state_dict())  # adapter removed
    if method in ("ti", "pivotal"):
        assert seen["changed_rows"] == seen["token_ids"]  # only the new word's row moved
    expected = {"lora": 1, "ti": 1, "pivotal": 1, "dreambooth": 1}[method]
    assert seen["trainable"] >= expected
    # which layers carried LoRA: attention projections are Linear, ResNet convolutions Conv2d, and
    # "convolutions" leaves attention alone (its feed-forward layers are Linear)
    assert seen["lora_kinds"] == {"attention": {"Linear"}, "all": {"Linear", "Conv2d"},
                                  "convolutions": {"Linear", "Conv2d"}, None: set()}[layers]
    assert seen["lora_on_attention"] == (layers in ("attention", "all"))


def test_cancel_keeps_a_checkpoint_at_the_step_it_stopped(make_trainer, tmp_path):
    trainer = make_trainer("lora", steps=20, checkpoint_every=100)
    original_step = trainer.train_step

    def step_then_cancel(step):
        loss = original_step(step)
        if step == 3:
            trainer.job.cancel_requested.set()
        return loss

    trainer.train_step = step_then_cancel
    with pytest.raises(JobCancelled):
        trainer.run()
    last = checkpoint.latest(trainer.spec.run_dir)
    assert last is not None and last.name == "step-000003"


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(make_trainer):
    trainer = make_trainer("lora", steps=10, checkpoint_every=2)
    original = trainer.compute_loss
    trainer.compute_loss = lambda step: original(step) * (float("nan") if step == 5 else 1.0)
    with pytest.raises(JobFailed) as info:
        trainer.run()
    assert info.value.code == "nan_loss"
    assert "step 5" in info.value.message and "step-000004" in info.value.message
    assert "learning rate" in info.value.hint


def test_preflight_measures_and_writes_nothing(make_trainer):
    trainer = make_trainer("pivotal", preflight=True, steps=500)
    result = trainer.run()
    assert result["preflight"] and result["seconds_per_step"] > 0 and result["eta_seconds"] > 500 * result["seconds_per_step"] * 0.9
    assert result["class_images_to_make"] == 2 and result["trainable_parameters"] > 0
    assert not (trainer.spec.run_dir / "checkpoints").exists()
    assert not [e for e in trainer.events if e["event"] == "artifact"]


# the cosine case resumes mid-decay (the schedule's state travels in the checkpoint); the last one
# resumes past pivotal tuning's pivot (the word trains steps 1-2) with a multi-vector word
@pytest.mark.parametrize("method, extra", [
    ("lora", {}), ("lora", dict(lr_schedule="cosine")), ("ti", {}), ("pivotal", {}),
    ("pivotal", dict(word_train_fraction=0.34, init_word="{token}", word_vectors=0)),
])
def test_resume_in_process_reproduces_an_uninterrupted_run(make_trainer, tmp_path, method, extra):
    straight = make_trainer(method, run_dir=tmp_path / "straight", steps=6, **extra)
    straight.run()
    first_half = make_trainer(method, run_dir=tmp_path / "halves", steps=6, **extra)
    first_half.train_step, original = None, first_half.train_step

    def stop_after_three(step):
        loss = original(step)
        if step == 3:
            first_half.job.cancel_requested.set()
        return loss

    first_half.train_step = stop_after_three
    with pytest.raises(JobCancelled):
        first_half.run()
    resumed = make_trainer(method, run_dir=tmp_path / "halves", steps=6, resume=True, **extra)
    resumed.run()
    a = load_file(str(checkpoint.latest(tmp_path / "straight") / "trainable.safetensors"))
    b = load_file(str(checkpoint.latest(tmp_path / "halves") / "trainable.safetensors"))
    assert a.keys() == b.keys()
    worst = {key: float((a[key] - b[key]).abs().max()) for key in a}
    assert max(worst.values()) < 1e-6, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


def test_pivotal_word_stops_learning_at_the_pivot_and_the_lora_goes_on(make_trainer, tmp_path):
    trainer = make_trainer("pivotal", steps=6, word_train_fraction=0.5, embedding_learning_rate=1e-2)
    trainer.run()
    at = {step: load_file(str(tmp_path / "pivotal" / "checkpoints" / f"step-{step:06d}" / "trainable.safetensors"))
          for step in (2, 4, 6)}
    assert not torch.equal(at[2]["embeddings"], at[4]["embeddings"])  # step 3 still trains the word
    assert torch.equal(at[4]["embeddings"], at[6]["embeddings"])  # steps 4-6 do not
    lora = [k for k in at[6] if k.startswith("unet.")]
    assert lora and any(not torch.equal(at[4][k], at[6][k]) for k in lora)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_the_rate_schedule_holds_or_decays_to_zero_by_the_last_step(make_trainer, schedule):
    trainer = make_trainer("lora", steps=8, lr_warmup_steps=2, lr_schedule=schedule, learning_rate=1e-3)
    trainer.run()
    rates = [e["lr"] for e in trainer.events if e["event"] == "progress" and e.get("phase") == "train"]
    assert len(rates) == 8 and rates[0] == pytest.approx(5e-4)  # after step 1 of a 2-step warm-up
    assert rates[1] == pytest.approx(1e-3)
    if schedule == "constant":
        assert rates[1:] == pytest.approx([1e-3] * 7)
    else:
        assert all(a > b for a, b in zip(rates[1:], rates[2:], strict=False)) and rates[-1] == pytest.approx(0)


def test_throttled_progress_still_carries_every_loss(toy_loaded, dotty_photos, tmp_path):
    from pathlib import Path

    from engine.jobs import Job, JobContext
    from engine.protocol import validate_job
    from engine.train.loop import RunSpec, Trainer
    from tests.train.conftest import tiny_config

    params = validate_job("train", dict(method="ti", token="<dotty-star>", class_noun="star", images=dotty_photos,
                                        run_dir=str(tmp_path / "run"), config=tiny_config("ti", steps=12)))
    events: list[dict] = []
    clock = iter(range(10**6))  # each call 1 ms later: at most one event in 100 ms goes out
    ctx = JobContext(Job("train", params), events.append, clock=lambda: next(clock) / 1000)
    spec = RunSpec("ti", "<dotty-star>", "star", dotty_photos, Path(params["run_dir"]), params["config"])
    Trainer(toy_loaded, spec, ctx).run()
    progress = [e for e in events if e["event"] == "progress" and e.get("phase") == "train"]
    assert len(progress) < 12  # throttled …
    assert [s for e in progress for s, _ in e["losses"]] == list(range(1, 13))  # … yet no step is missing


def test_a_run_folder_being_trained_elsewhere_is_refused(make_trainer, tmp_path):
    from engine.train.runtime import lock_run_folder

    held = lock_run_folder(_mkdir(tmp_path / "busy"))
    try:
        with pytest.raises(JobFailed) as info:
            make_trainer("ti", run_dir=tmp_path / "busy").run()
        assert info.value.code == "run_busy"
    finally:
        held.close()
    assert make_trainer("ti", run_dir=tmp_path / "busy", steps=2).run()["step"] == 2  # free again


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def test_the_prior_trains_on_the_base_models_own_class_latents(make_trainer, tmp_path, toy_loaded):
    """Each class seed is cached as a PNG and the latent it was decoded from; the prior's targets are
    those latents exactly (no VAE round trip), and a cache of PNGs alone gets its latents made."""
    import numpy as np
    from PIL import Image

    from engine.train import data

    seen = {}
    trainer = make_trainer("lora", steps=2, class_images=2, prior_on_latents=True)
    trainer.on_trained = lambda tr: seen.update(first=tr.classes)  # the caches are freed after the run
    trainer.run()
    folder = trainer.class_folder
    stored = torch.stack([load_file(str(data.class_latent_path(folder, s)))["latent"] for s in range(2)])
    assert torch.equal(seen["first"].mean.cpu(), stored) and float(seen["first"].std.abs().max()) == 0.0
    vae = toy_loaded.pipeline.vae
    with torch.no_grad():
        decoded = toy_loaded.pipeline.image_processor.postprocess(vae.decode(stored[:1]).sample, output_type="np")[0]
    png = np.asarray(Image.open(folder / "00000.png"), dtype=np.float32) / 255
    assert np.abs(decoded - png).max() <= 1 / 255 + 1e-6  # the PNG is that latent, decoded

    # an older cache (PNGs only): the missing latent is made, the PNG kept
    data.class_latent_path(folder, 1).unlink()
    assert data.missing_class_seeds(folder, 2) == [1]
    again = make_trainer("lora", run_dir=tmp_path / "again", steps=2, class_images=2, prior_on_latents=True)
    again.on_trained = lambda tr: seen.update(again=tr.classes)
    again.run()
    assert again.class_images_missing == 1 and data.class_latent_path(folder, 1).is_file()
    assert torch.equal(seen["again"].mean.cpu(), stored)
