"""The engine as a real subprocess, driven through the client the GUI and CLI use."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2s_desktop.engine_client import EngineClient, EngineError
from s2s_desktop.image_meta import parse_parameters


class Recorder:
    def __init__(self):
        self.events: list[dict] = []
        self.states: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_event(self, message):
        with self.lock:
            self.events.append(message)

    def on_state(self, state, detail):
        with self.lock:
            self.states.append((state, detail))

    def wait_for(self, predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for message in self.events:
                    if predicate(message):
                        return message
            time.sleep(0.02)
        raise TimeoutError("event never arrived; saw: " + repr([e.get("event") for e in self.events][-20:]))

    def terminal(self, job_id, timeout=120.0):
        return self.wait_for(lambda m: m.get("job") == job_id and m.get("event") in ("finished", "failed", "cancelled"), timeout)


@pytest.fixture(scope="module")
def engine():
    recorder = Recorder()
    client = EngineClient(on_event=recorder.on_event, on_state=recorder.on_state)
    client.start()
    yield client, recorder
    client.close()


def test_hello_and_devices(engine):
    client, _ = engine
    assert client.hello["v"] == 1 and "generate" in client.hello["job_kinds"]
    found = client.call("devices", timeout=60)
    assert found["devices"][-1]["kind"] == "cpu" and found["selected"] in ("cpu", "cuda", "mps")


def test_load_folder_generate_and_metadata(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    info = client.load_model({"source": str(tiny_model_dir), "name": "tiny"}).result(timeout=120)
    assert info["kind"] == "folder" and info["native_resolution"] == 64
    job = client.submit(
        "generate",
        {"prompt": "a red star", "negative_prompt": "blurry", "seed": 3, "steps": 4, "batch": 2, "out_dir": str(tmp_path)},
    ).result(timeout=30)["job"]
    done = recorder.terminal(job)
    assert done["event"] == "finished", done
    artifacts = [e for e in recorder.events if e.get("job") == job and e["event"] == "artifact"]
    assert [a["seed"] for a in artifacts] == [3, 4]
    progress = [e for e in recorder.events if e.get("job") == job and e["event"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["total"] == 4
    for artifact in artifacts:
        path = Path(artifact["path"])
        assert path.parent == tmp_path and path.suffix == ".png"
        with Image.open(path) as image:
            assert image.size == (64, 64)
            parsed = parse_parameters(image.info["parameters"])
        assert parsed["prompt"] == "a red star" and parsed["negative_prompt"] == "blurry"
        assert parsed["Seed"] == str(artifact["seed"]) and parsed["Steps"] == "4" and parsed["Size"] == "64x64"
        assert parsed["Sampler"] == "DDIM" and parsed["Model"] == "tiny"
    assert not list(tmp_path.glob(".*tmp"))


def test_same_seed_same_image_and_seed_per_image(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    client.load_model({"source": str(tiny_model_dir), "name": "tiny"}).result(timeout=120)
    paths = []
    for seed, batch in ((5, 1), (4, 2)):
        job = client.submit("generate", {"prompt": "a cat", "seed": seed, "steps": 3, "batch": batch, "out_dir": str(tmp_path)}).result()["job"]
        assert recorder.terminal(job)["event"] == "finished"
        paths.append([e["path"] for e in recorder.events if e.get("job") == job and e["event"] == "artifact"])
    # image seed 5 alone == second image of the batch starting at seed 4 (batched matmuls may
    # round differently in the last bit, hence the tolerance of 2/255)
    alone, in_batch, other = (np.asarray(Image.open(p), dtype=int) for p in (paths[0][0], paths[1][1], paths[1][0]))
    assert np.abs(alone - in_batch).max() <= 2
    assert np.abs(other - in_batch).mean() > 10


def test_single_file_loads_offline_and_matches_folder(engine, tiny_model_dir, tiny_single_file, tmp_path):
    client, recorder = engine
    outputs = []
    for source, extra in ((tiny_model_dir, {}), (tiny_single_file, {"config": str(tiny_model_dir)})):
        info = client.load_model({"source": str(source), "name": "t", **extra}).result(timeout=120)
        job = client.submit("generate", {"prompt": "a blue circle", "seed": 1, "steps": 3, "out_dir": str(tmp_path)}).result()["job"]
        assert recorder.terminal(job)["event"] == "finished"
        outputs.append((info["kind"], [e["path"] for e in recorder.events if e.get("job") == job and e["event"] == "artifact"][0]))
    assert [kind for kind, _ in outputs] == ["folder", "single_file"]
    assert Image.open(outputs[0][1]).tobytes() == Image.open(outputs[1][1]).tobytes()


def test_prompt_over_77_tokens_fails_with_a_message(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    client.load_model({"source": str(tiny_model_dir)}).result(timeout=120)
    job = client.submit("generate", {"prompt": "a very long prompt " * 10, "steps": 2, "out_dir": str(tmp_path)}).result()["job"]
    done = recorder.terminal(job)
    assert done["event"] == "failed" and done["error"]["code"] == "prompt_too_long"
    assert "77" in done["error"]["message"]


def test_cancel_takes_effect_within_one_step(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    client.load_model({"source": str(tiny_model_dir)}).result(timeout=120)
    job = client.submit("generate", {"prompt": "slow", "steps": 500, "width": 256, "height": 256, "out_dir": str(tmp_path)}).result()["job"]
    recorder.wait_for(lambda m: m.get("job") == job and m.get("event") == "progress" and m["step"] >= 2)
    answer = client.cancel(job).result(timeout=10)
    done = recorder.terminal(job, timeout=60)
    assert done["event"] == "cancelled"
    assert done["step"] - answer["step"] <= 1, (answer, done)
    assert not list(tmp_path.glob("*.png"))
    # the engine is still serving
    assert client.call("hello", timeout=10)["v"] == 1


def test_queued_job_can_be_cancelled_before_it_starts(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    client.load_model({"source": str(tiny_model_dir)}).result(timeout=120)
    first = client.submit("generate", {"prompt": "one", "steps": 200, "width": 128, "height": 128, "out_dir": str(tmp_path)}).result()["job"]
    second = client.submit("generate", {"prompt": "two", "steps": 2, "out_dir": str(tmp_path)}).result()
    assert second["position"] == 2
    client.cancel(second["job"]).result(timeout=10)
    client.cancel(first).result(timeout=10)
    assert recorder.terminal(second["job"])["event"] == "cancelled"
    assert recorder.terminal(first)["event"] == "cancelled"
    assert not any(m.get("job") == second["job"] and m["event"] == "started" for m in recorder.events)


def test_sigkill_mid_job_is_reported_and_engine_restarts(tiny_model_dir, tmp_path):
    recorder = Recorder()
    client = EngineClient(on_event=recorder.on_event, on_state=recorder.on_state)
    client.start()
    try:
        client.load_model({"source": str(tiny_model_dir), "name": "tiny"}).result(timeout=120)
        job = client.submit("generate", {"prompt": "x", "steps": 500, "width": 256, "height": 256, "out_dir": str(tmp_path)}).result()["job"]
        recorder.wait_for(lambda m: m.get("job") == job and m.get("event") == "progress" and m["step"] >= 1)
        old_pid = client.pid
        os.kill(old_pid, signal.SIGKILL)
        failed = recorder.terminal(job, timeout=30)
        assert failed["event"] == "failed" and failed["error"]["code"] == "engine_died"
        assert "SIGKILL" in failed["error"]["message"]
        assert client.jobs[job].state == "failed"
        # restarted, with the model reloaded, and serving again
        deadline = time.monotonic() + 120
        while not (client.running and client.pid != old_pid and ("model", "tiny") in recorder.states):
            assert time.monotonic() < deadline, recorder.states
            time.sleep(0.1)
        assert client.restarts == 1
        job2 = client.submit("generate", {"prompt": "y", "steps": 2, "out_dir": str(tmp_path)}).result(timeout=30)["job"]
        assert recorder.terminal(job2)["event"] == "finished"
    finally:
        client.close()


def test_requests_to_a_dead_engine_fail_fast(tiny_model_dir):
    client = EngineClient(auto_restart=False)
    client.start()
    os.kill(client.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while client.running and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(EngineError) as info:
        client.call("hello", timeout=5)
    assert info.value.code == "engine_died"
    client.close()


def test_a_model_that_fails_to_load_keeps_the_previous_one(engine, tiny_model_dir, tmp_path):
    client, recorder = engine
    client.load_model({"source": str(tiny_model_dir), "name": "tiny"}).result(timeout=120)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')
    with pytest.raises(EngineError) as info:
        client.load_model({"source": str(broken)}).result(timeout=120)
    assert info.value.code == "model_error" and "broken-model" in info.value.message
    job = client.submit("generate", {"prompt": "still here", "steps": 2, "out_dir": str(tmp_path)}).result()["job"]
    done = recorder.terminal(job)
    assert done["event"] == "finished", done
    artifact = [e for e in recorder.events if e.get("job") == job and e["event"] == "artifact"][0]
    assert "Model: tiny" in artifact["parameters"]
