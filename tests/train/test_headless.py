"""The same run headless: the launch file round-trips, and a 2-process CPU launch trains data-parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine import protocol
from engine.protocol.training import read_launch, write_launch
from engine.train import checkpoint
from tests.train.conftest import TOY, tiny_config


def _job(tmp_path, photos, **overrides):
    return dict(method="lora", token="<dotty-star>", class_noun="star", images=photos, run_dir=str(tmp_path / "run"),
                class_cache_dir=str(tmp_path / "class-cache"), config=tiny_config("lora", **overrides))


def test_launch_file_round_trips(tmp_path, dotty_photos):
    model = {"source": str(TOY), "device": "cpu"}
    path = write_launch(tmp_path / "launch", model, _job(tmp_path, dotty_photos))
    read_model, read_job = read_launch(path)
    assert read_job == protocol.validate_job("train", _job(tmp_path, dotty_photos))
    assert read_model["source"] == str(TOY) and read_model["device"] == "cpu"


def test_two_process_cpu_launch_trains_data_parallel(tmp_path, dotty_photos):
    path = write_launch(tmp_path / "launch", {"source": str(TOY), "device": "cpu"},
                        _job(tmp_path, dotty_photos, steps=4, checkpoint_every=2))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "engine.train.headless", str(path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1  # process 0 reports; process 1 trained alongside it
    summary = json.loads(lines[0][7:])
    assert summary["step"] == 4 and summary["exports"]
    run_dir = tmp_path / "run"
    assert checkpoint.latest(run_dir).name == "step-000004"
    assert (run_dir / "exports" / "pytorch_lora_weights.safetensors").is_file()
