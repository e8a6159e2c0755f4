"""The engine killed (SIGKILL) at seeded random points of a toy training run and of galleries, with
the real Train page / Compare panel and a real engine on the shipped toy-world model.

After every kill: the page shows the failure, the engine comes back by itself with the model
reloaded, the library passes its integrity and consistency checks (``consistency.problems``: SQLite's
own check, every row's files exist, no file without a row), and Resume continues from the last
checkpoint, redoing at most one checkpoint interval."""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import pytest

from engine.train import checkpoint
from s2s_desktop.library import Library, consistency, galleries
from s2s_desktop.library import runs as library_runs
from s2s_desktop.pages.compare import ComparePanel
from s2s_desktop.pages.train import TrainPage
from s2s_desktop.settings import Settings
from tests.gui.test_compare import make_subject as make_compare_subject
from tests.gui.test_train_page import ONE_PROMPT, make_subject, type_settings

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

SEED = 20261202
KILLS = 10


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


def kill_engine(engine) -> int:
    pid = engine.client.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def engine_back(engine, old_pid: int) -> bool:
    """Restarted by the client (a new process) with the model loaded again."""
    client = engine.client
    return client.running and client.pid != old_pid and client.loaded_model is not None


def checkpoint_step(run) -> int:
    latest = checkpoint.latest(run.folder)
    return int(latest.name.split("-")[1]) if latest else 0


@pytest.mark.timeout(900)  # ten engine restarts, each reloading the model (about 10 s on 2 cores)
def test_engine_killed_at_10_random_points_of_a_training_run(qtbot, aloop, toy_engine, library, tmp_path,
                                                            run_until, faults):
    rng = random.Random(SEED)
    steps, every = 30, 2
    # distinct steps to be killed at, in order (each resume goes on from the one before), and a random
    # extra delay so kills land mid-step, mid-checkpoint-write and mid-progress-event
    targets = sorted(rng.sample(range(every + 1, steps - 1), KILLS))
    subject = make_subject(library, tmp_path)
    page = TrainPage(toy_engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.show()
    type_settings(page, steps=steps, batch=1, prior=True, class_images=2, class_image_steps=2, sample_every=0,
                  checkpoint_every=every, **ONE_PROMPT)
    page.train_button.click()

    def live():
        return next(iter(page.jobs.live.values()), None)

    redone = []
    try:
        for target in targets:
            run_until(lambda t=target: live() is not None and live().step >= t, 180, page.status.text())
            time.sleep(rng.uniform(0.0, 0.2))
            seen = live().step
            old_pid = kill_engine(toy_engine)
            run_until(lambda: library_runs.runs_of(library, subject.id)[0].status == "failed", 60, page.status.text())
            run_until(lambda o=old_pid: engine_back(toy_engine, o) and page.model_info is not None, 180,
                      "the engine did not come back")
            run = library_runs.runs_of(library, subject.id)[0]
            assert "SIGKILL" in (run.error or ""), run.error
            assert "SIGKILL" in page.status.text() or "killed" in page.status.text(), page.status.text()
            assert run.resumable, "the run lost its checkpoints"
            redone.append(seen - checkpoint_step(run))
            assert redone[-1] <= every, f"killed at step ≥ {seen}, last checkpoint {checkpoint_step(run)}"
            assert consistency.problems(library) == []
            run_until(lambda: page.resume_button.isEnabled(), 30, "Resume is not offered")
            page.resume_button.click()
        run_until(lambda: library_runs.runs_of(library, subject.id)[0].status in ("finished", "failed"), 240,
                  page.status.text())
    finally:
        for entry in page.jobs.active_runs():
            if entry.job:
                toy_engine.cancel(entry.job)
        page.shutdown()
        toy_engine.event.disconnect(page.jobs.on_event)
    run = library_runs.runs_of(library, subject.id)[0]
    assert run.status == "finished" and run.result["step"] == steps, run.error
    assert all(os.path.exists(e["path"]) for e in run.result["exports"])
    assert consistency.problems(library) == []
    faults.record("engine killed", "SIGKILL at 10 seeded random points of a toy LoRA run (Train page, Resume)",
                  tried=KILLS, survived=KILLS, data_lost=sum(1 for r in redone if r > every),
                  note=f"steps redone after each kill: {redone} (checkpoint every {every})")


@pytest.mark.timeout(900)
def test_engine_killed_at_10_random_points_of_galleries(qtbot, aloop, toy_engine, library, tmp_path, run_until,
                                                        faults):
    rng = random.Random(SEED + 1)
    subject = make_compare_subject(library, tmp_path)
    panel = ComparePanel(toy_engine, Settings.load(), library)
    qtbot.addWidget(panel)
    panel.show()
    panel.templates.setPlainText("a photo of {token} {class}\na photo of {token} {class} on a gray background")
    panel.seeds.setText("0-5")
    panel.steps.setValue(6)
    panel.batch.setValue(2)
    kept, mid_job = [], 0
    try:
        for _ in range(KILLS):
            run_until(lambda: panel.generate_button.isEnabled(), 60, "Generate is not offered again")
            panel.generate_button.click()
            run_until(lambda: panel.current_job is not None, 30, panel.status.text())
            time.sleep(rng.uniform(0.0, 2.0))  # anywhere from queued to the last image (or just after it)
            old_pid = kill_engine(toy_engine)
            run_until(lambda: panel.current_job is None, 60, panel.status.text())
            status = panel.status.text()
            if status.startswith("Failed"):
                assert "SIGKILL" in status, status
                mid_job += 1
            else:  # the gallery ended just before the kill landed: an idle engine was killed
                assert status.startswith("Done"), status
            run_until(lambda o=old_pid: engine_back(toy_engine, o) and panel.model_info is not None, 180,
                      "the engine did not come back")
            consistency.recover(library)  # what the next start does; the panel recorded what it could
            assert consistency.problems(library) == []
            kept.append(panel.grid.image_count())
        assert mid_job >= KILLS // 2, f"only {mid_job} kills landed inside a gallery"
        run_until(lambda: panel.generate_button.isEnabled(), 60, "Generate is not offered again")
        panel.generate_button.click()  # and a gallery after all that runs to the end
        run_until(lambda: panel.current_job is None and "Done" in panel.status.text(), 180, panel.status.text())
    finally:
        if panel.current_job:
            toy_engine.cancel(panel.current_job)
        toy_engine.event.disconnect(panel.on_event)
        toy_engine.state_changed.disconnect(panel._on_engine_state)
    stored = galleries.list_galleries(library, subject.id)
    assert stored[0].manifest()["complete"] and len(stored[0].manifest()["images"]) == 12
    for gallery in stored[1:]:  # every partial gallery lists exactly the images on disk
        manifest = gallery.manifest()
        on_disk = sorted(str(p.relative_to(gallery.folder)) for p in gallery.folder.rglob("*.png"))
        assert on_disk == sorted(image["file"] for image in manifest["images"])
    assert consistency.problems(library) == []
    faults.record("engine killed", "SIGKILL at 10 seeded random points of galleries (Compare panel)",
                  tried=KILLS, survived=KILLS, data_lost=0,
                  note=f"{mid_job} kills inside a gallery; images kept per gallery: {kept}")


# A fake engine: answers hello, then (optionally) reports progress of a job, then dies.
FLAKY_ENGINE = r"""
import json, sys, time
request = json.loads(sys.stdin.readline())
print(json.dumps({"type": "response", "id": request["id"], "result": {"v": 1, "engine": "fake", "pid": 0,
                  "python": "3", "job_kinds": []}}), flush=True)
if sys.argv[1] == "works":
    print(json.dumps({"type": "event", "job": "j1", "event": "progress", "step": 1, "total": 9}), flush=True)
time.sleep(0.2)
sys.exit(3)
"""


@pytest.mark.parametrize("works", [False, True])
def test_restarts_stop_only_for_an_engine_that_dies_before_doing_any_work(tmp_path, works, faults):
    from s2s_desktop.engine_client import MAX_DEATHS_WITHOUT_WORK, EngineClient

    states = []
    client = EngineClient(command=[sys.executable, "-c", FLAKY_ENGINE, "works" if works else "dies"],
                          on_state=lambda state, detail: states.append((state, detail)))
    client.start()
    deadline = time.monotonic() + 60
    try:
        if works:  # killed while working: restarted every time (here: more often than the loop limit)
            while client.restarts <= MAX_DEATHS_WITHOUT_WORK + 1:
                assert time.monotonic() < deadline, states
                time.sleep(0.05)
            assert not any(state == "failed" for state, _ in states)
        else:
            while not any(state == "failed" for state, _ in states):
                assert time.monotonic() < deadline, states
                time.sleep(0.05)
            (detail,) = [d for state, d in states if state == "failed"]
            assert client.restarts == MAX_DEATHS_WITHOUT_WORK - 1
            assert "3 times in a row before doing any work" in detail and "exited with code 3" in detail
    finally:
        client.close()
    faults.record("engine killed", "an engine that dies right after starting, again and again" if not works
                  else "an engine that dies while working, again and again",
                  note="restarts stop after 3 deaths without work" if not works else "restarted each time")
