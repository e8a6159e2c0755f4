"""Numerical faults in a real training run (the toy-world model, the real loop): a NaN or an inf
must stop training within a step, keep the last good checkpoint (never one with NaN weights), write
no sample or export from broken weights, and say what probably caused it and what to do.

Two ways in, both for real: a learning rate of 1e30 (the weights blow up after one step and the
next loss is NaN; the protocol refuses such a rate, so it is set past validation) and a NaN that
appears in the backward pass at step k while the loss itself is still finite (what an fp16
overflow in the gradients looks like), with and without gradient clipping.
"""

from __future__ import annotations

import argparse
import math
from types import SimpleNamespace

import pytest

from engine.jobs import JobFailed
from engine.protocol import ErrorCode
from engine.train import checkpoint
from tests.fault.training_helpers import (
    artifacts,
    checkpoint_names,
    make_trainer,
    progress_steps,
    render_photos,
    weights_finite,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    return render_photos(tmp_path_factory.mktemp("numerical-photos"))


def assert_names_causes(error: JobFailed) -> None:
    hint = error.hint.lower()
    assert error.code == ErrorCode.NAN_LOSS
    assert "learning rate" in hint and "lower" in hint
    assert "fp16" in hint and "mps" in hint and "mixed precision" in hint


def test_a_huge_learning_rate_stops_at_the_first_nan_and_keeps_finite_checkpoints(photos, tmp_path, faults):
    run_dir = tmp_path / "run"
    trainer = make_trainer(run_dir, photos, steps=10, checkpoint_every=1,
                           unchecked={"learning_rate": 1e30})
    with pytest.raises(JobFailed) as info:
        trainer.run()
    error = info.value
    # step 1 moves every LoRA weight by ~1e30; the loss of step 2 overflows
    assert "the loss became nan at step 2" in error.message and "training stopped" in error.message
    assert_names_causes(error)
    assert "1e+30" in error.hint  # the rate in use, so the user sees what to lower
    assert max(progress_steps(trainer)) == 1  # stopped at once, not after all 10 steps
    assert checkpoint_names(run_dir) == ["step-000001"]
    assert weights_finite(run_dir / "checkpoints" / "step-000001")
    assert "step-000001" in error.message and "resume from step-000001" in error.hint
    assert [s["step"] for s in artifacts(trainer, "sample")] == [0]  # only the baseline, before training
    assert not (run_dir / "exports").exists()
    # on an Apple GPU the fp16 cause comes first (the device query is the trainer's; no MPS here)
    trainer.device, trainer.optimizer = "mps", SimpleNamespace(param_groups=[{"lr": 1e-4}])
    on_mps = trainer.numerical_failure(3, "the loss became nan").hint
    assert on_mps.index("(MPS)") < on_mps.index("learning rate") and "(now 0.0001)" in on_mps
    faults.record("numerical", "learning rate 1e30: NaN loss at step 2", tried=1, survived=1, data_lost=0,
                  note="stopped at step 2 of 10; checkpoint step-000001 finite; no samples/exports after")


@pytest.mark.parametrize(("clip", "bad_step"), [(1.0, 4), (0.0, 6)], ids=["clipped-step4", "unclipped-last-step"])
def test_a_nan_gradient_never_reaches_a_checkpoint_and_the_run_resumes_to_the_end(
    photos, tmp_path, capsys, faults, clip, bad_step
):
    from s2s_desktop import cli_train
    from s2s_desktop.engine_client import JobRecord
    from s2s_desktop.library import Library
    from s2s_desktop.library import runs as library_runs

    library = Library(tmp_path / "home")
    subject = library.create_subject("Dotty", "star")
    run = library_runs.create_run(library, subject, "lora", {"steps": 6}, "toy-world")
    trainer = make_trainer(run.folder, photos, steps=6, checkpoint_every=2, max_grad_norm=clip)
    original = trainer.compute_loss

    def loss_with_a_nan_backward(step):
        loss = original(step)
        if step == bad_step:  # the loss stays finite; its gradient is NaN (an fp16 backward overflow)
            loss.register_hook(lambda grad: grad * math.nan)
        return loss

    trainer.compute_loss = loss_with_a_nan_backward
    library_runs.update_run(library, run.id, status="running")
    with pytest.raises(JobFailed) as info:
        trainer.run()
    error = info.value
    what = "the gradient became nan" if clip else "the trained weights became NaN or infinite"
    assert f"{what} at step {bad_step}" in error.message
    assert_names_causes(error)
    last_good = f"step-{bad_step - 2:06d}"
    assert f"the last good checkpoint ({last_good})" in error.message
    assert max(progress_steps(trainer)) <= bad_step  # stopped within the step, not after all of them
    # no checkpoint of the NaN weights, no half one: the older good ones only
    names = checkpoint_names(run.folder)
    assert names[-1] == last_good and all(n.startswith("step-") for n in names)
    assert all(weights_finite(run.folder / "checkpoints" / n) for n in names)
    samples = [s["step"] for s in artifacts(trainer, "sample")]
    assert samples == [0] and sorted(p.name for p in (run.folder / "samples").iterdir()) == ["step-000000-p0-s0.png"]
    assert not (run.folder / "exports").exists()

    # what the user sees: the CLI (and the Train page, through the same library call) marks the run
    # failed with the message, and offers resume from the kept checkpoint
    record = JobRecord(id="job", kind="train", state="failed", step=trainer.job.step,
                       error={"code": error.code, "message": error.message, "hint": error.hint})
    args = argparse.Namespace(preflight=False, json=False, subject="Dotty")
    assert cli_train.report(library, run, record, args) == 1
    shown = capsys.readouterr().err
    assert error.message in shown and error.hint in shown and f"--resume {run.id}" in shown
    row = library_runs.get_run(library, run.id)
    assert row.status == "failed" and error.message in row.error and "learning rate" in row.error
    assert row.resumable

    resumed = make_trainer(run.folder, photos, resume=True, steps=6, checkpoint_every=2, max_grad_norm=clip)
    result = resumed.run()
    assert any(e["event"] == "log" and f"resuming from {last_good}" in e["message"] for e in resumed.events)
    assert result["step"] == 6 and math.isfinite(result["final_loss"]) and result["exports"]
    assert weights_finite(checkpoint.latest(run.folder)) and checkpoint.latest(run.folder).name == "step-000006"
    library.close()
    faults.record("numerical", f"NaN gradient at step {bad_step} ({'clipped' if clip else 'no clipping'})",
                  tried=1, survived=1, data_lost=0,
                  note=f"stopped at step {bad_step}; {last_good} kept, finite, resumed to the end")
