"""The Train page offscreen: its logic without an engine, then real LoRA runs with tiny settings on
the shipped toy-world model in a real engine subprocess (train to the end; pause and resume)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QPlainTextEdit, QPushButton

from engine.protocol.training import TRAIN_CONFIG, UNUSED, preset
from s2s_desktop.library import ImportLimits, Library, import_files
from s2s_desktop.library import runs as library_runs
from s2s_desktop.pages.train import TrainPage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from s2s_desktop.widgets.loss_plot import SMOOTH_COLOUR, LossPlot

TOY_INFO = {"name": "Toy world (demo)", "device": "cpu", "native_resolution": 64, "location": "/x/toy-world"}
ONE_PROMPT = {"sample_prompts": ["a photo of {token}"], "sample_seeds": [0], "sample_steps": 2}


def make_subject(library: Library, folder, photos: int = 4):
    subject = library.create_subject("Dotty", "star")
    paths = []
    for i in range(photos):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        pixels[:128, :96] = rng.integers(0, 256, 3, dtype=np.uint8)  # every photo looks different
        paths.append(folder / f"photo-{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    report = import_files(library, subject, paths, ImportLimits())
    assert len(report.imported) == photos
    return library.subject(subject.id)


def type_settings(page: TrainPage, **values) -> None:
    """What a user types into the Advanced editors (each edit marks the field as the user's)."""
    for name, value in values.items():
        editor = page.editor.editors[name]
        if isinstance(editor, QPlainTextEdit):
            editor.setPlainText("\n".join(value))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(value)
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            editor.setText(text)
            editor.textEdited.emit(text)


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def offline_page(qtbot, library, tmp_path):
    make_subject(library, tmp_path)
    page = TrainPage(QtEngine(), Settings.load(), library)  # an engine that is never started
    qtbot.addWidget(page)
    page.resize(1130, 620)
    page.show()
    page.set_model_info(TOY_INFO)
    yield page
    page.shutdown()


# ---------------------------------------------------------------------------------------------
# without an engine


def test_methods_change_the_preset_and_the_fields_shown(offline_page, qtbot):
    page = offline_page
    assert page.cards.method() == "lora"
    lora, ti = (preset(m, 4, "cpu", toy=True) for m in ("lora", "ti"))  # the toy model's presets
    assert page.summary.text() == (f"Preset: {lora['steps']} steps · lr {lora['learning_rate']:g} · batch "
                                   f"{lora['batch']} · rank {lora['rank']} · prior on, {lora['class_images']} class images")
    qtbot.mouseClick(page.cards.cards["ti"], Qt.LeftButton)  # anywhere on the card selects it
    assert page.cards.method() == "ti"
    assert page.summary.text() == (f"Preset: {ti['steps']} steps · word lr {ti['embedding_learning_rate']:g} · "
                                   f"batch {ti['batch']}")  # no LoRA, no prior
    for method in ("dreambooth", "lora", "ti", "pivotal"):
        page.cards.set_method(method)
        assert set(page.editor.visible_fields()) == set(TRAIN_CONFIG) - UNUSED[method], method
        assert page.editor.editors["steps"].text() == str(page.current_preset()["steps"])
    page.cards.set_method("dreambooth")
    dreambooth = preset("dreambooth", 4, "cpu", toy=True)
    assert f"lr {dreambooth['learning_rate']:g}" in page.summary.text() and "rank" not in page.summary.text()
    assert page.train_button.isEnabled() and page.preflight_button.isEnabled()


def test_an_invalid_advanced_value_is_explained_and_blocks_training(offline_page):
    page = offline_page
    page.advanced_toggle.click()
    assert page.editor.isVisible()
    type_settings(page, learning_rate="fast")
    error = page.editor.error_labels["learning_rate"]
    assert error.isVisible() and "must be a number" in error.text()
    assert not page.train_button.isEnabled() and not page.preflight_button.isEnabled()
    assert "Learning rate" in page.problem.text()

    type_settings(page, learning_rate="2e-3")
    assert not error.isVisible() and page.train_button.isEnabled()
    assert page.summary.text().startswith("Your settings:") and "lr 0.002" in page.summary.text()
    page.cards.set_method("pivotal")  # the user's value outlives a change of method
    assert page.editor.editors["learning_rate"].text() == "2e-3"

    type_settings(page, steps=0)  # a number, but out of range: validate_config says why
    assert "Steps must be ≥ 1" in page.editor.error_labels["steps"].text()
    assert not page.train_button.isEnabled()
    type_settings(page, steps=50, rank="big")
    assert not page.train_button.isEnabled()
    page.cards.set_method("ti")  # TI has no rank: a bad value in a hidden field does not block
    assert page.train_button.isEnabled() and page.validate()["steps"] == 50

    page.editor.reset_button.click()
    assert page.summary.text().startswith(f"Preset: {preset('ti', 4, 'cpu', toy=True)['steps']} steps")
    assert not page.problem.isVisible()


def test_train_says_why_it_cannot_start(offline_page, library):
    page = offline_page
    empty = library.create_subject("Mug", "mug")
    page.refresh_subjects(select_id=empty.id)
    assert not page.train_button.isEnabled() and "Mug has no photos" in page.problem.text()
    assert page.run_list.count() == 1 and "No runs yet" in page.run_list.item(0).text()
    page.refresh_subjects(select_id=library.subject("Dotty").id)
    assert page.train_button.isEnabled() and not page.problem.isVisible()
    page.set_model_info(None)  # e.g. the engine restarting
    assert not page.train_button.isEnabled() and "Waiting for the model" in page.problem.text()


def test_run_elsewhere_writes_a_launch_file_the_headless_trainer_reads(offline_page, library, run_until):
    from engine.protocol.training import read_launch

    offline_page.on_export_launch()
    run_until(lambda: "written to" in offline_page.status.text(), 30, "no launch file")
    assert "accelerate launch --multi_gpu" in offline_page.status.text()
    (run,) = runs_of_library(library)
    model, job = read_launch(run.folder / "launch" / "run.json")
    assert job["method"] == offline_page.cards.method() and len(job["images"]) == 4
    assert model["source"].endswith("toy-world") and run.status == "cancelled"


def runs_of_library(library):
    from s2s_desktop.library.runs import runs_of

    return [run for subject in library.subjects() for run in runs_of(library, subject.id)]


def test_loss_plot_draws_200_points_with_a_sensible_range(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(520, 300)
    plot.set_total(400)
    rng = random.Random(0)
    for step in range(1, 201):
        plot.add_point(step, 0.25 + 0.3 * math.exp(-step / 40) + rng.uniform(-0.1, 0.1))
    plot.add_point(150, 9.0)  # a resumed run repeats step 150 on: the rest is dropped
    for step in range(151, 201):
        plot.add_point(step, 0.25 + rng.uniform(-0.1, 0.1))
    low, high = plot.y_range()
    assert len(plot.steps) == 200 and plot.steps[-1] == 200
    assert low == 0.0 and max(plot.smoothed()) <= high < 2.0  # the one 9.0 does not flatten the curve
    assert plot.x_range() == (0.0, 400.0)
    image = plot.grab().toImage()
    assert not image.isNull() and image.width() == 520
    colours = {image.pixelColor(x, y).rgb() for x in range(0, 520, 2) for y in range(0, 300, 2)}
    assert SMOOTH_COLOUR.rgb() in colours  # the smoothed line was drawn


# ---------------------------------------------------------------------------------------------
# with the engine and the toy-world model


@pytest.fixture
def engine_page(qtbot, aloop, toy_engine, library, tmp_path):
    subject = make_subject(library, tmp_path)
    page = TrainPage(toy_engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.resize(1130, 620)
    page.show()
    assert page.model_info["name"] == "Toy world (demo)" and page.is_toy_model()
    yield page, subject
    for live in page.jobs.active_runs():  # a failed test must not leave the next one queued behind it
        if live.job:
            toy_engine.cancel(live.job)
    page.shutdown()
    toy_engine.event.disconnect(page.jobs.on_event)


def run_of(page, subject):
    return library_runs.runs_of(page.library, subject.id)[0]


def test_train_preflight_and_a_run_to_the_end(engine_page, run_until):
    page, subject = engine_page
    states = []
    page.jobs.changed.connect(lambda run_id: states.append(page.jobs.live[run_id].state))
    type_settings(page, steps=4, batch=1, class_images=2, class_image_steps=2, sample_every=2,
                  checkpoint_every=2, **ONE_PROMPT)
    assert page.validate()["class_images"] == 2
    page.preflight_button.click()
    page.train_button.click()  # queued behind the preflight in the engine

    run_until(lambda: page.preflight_result.isVisible() or "failed" in page.status.text(), 120, page.status.text())
    text = page.preflight_result.text()
    assert "s</b> per step" in text and "GiB" in text and "min</b> for 4 steps" in text, text
    assert "trainable parameters" in text

    run_until(lambda: run_of(page, subject).status in ("finished", "failed"), 180, page.status.text())
    run = run_of(page, subject)
    assert run.status == "finished", run.error
    assert run.step == 4 and run.result["step"] == 4 and isinstance(run.result["exports"], list)
    assert {"class_images", "train"} <= set(states)
    monitor = page.monitor
    assert monitor.run.id == run.id
    assert monitor.loss_plot.steps == [1, 2, 3, 4]
    assert monitor.samples.steps() == [0, 2, 4]  # the baseline, one during training, the final one
    assert monitor.export_paths() == [e["path"] for e in run.result["exports"]]
    assert "finished" in page.run_list.item(0).text() and "4/4 steps" in page.run_list.item(0).text()
    assert page.status.text().startswith(f"Run #{run.id} finished")
    viewer = page.show_sample(monitor.samples.samples[(0, 0, 0)])
    assert viewer.isVisible() and "Training step: 0" in viewer.text.toPlainText()
    assert not [b for b in viewer.findChildren(QPushButton) if b.text() == "Use these settings" and b.isVisible()]
    viewer.close()


def test_pause_keeps_the_progress_and_resume_finishes(engine_page, run_until):
    page, subject = engine_page
    type_settings(page, steps=30, batch=1, prior=False, sample_every=0, checkpoint_every=5, **ONE_PROMPT)
    page.train_button.click()
    run_until(lambda: page.jobs.live and next(iter(page.jobs.live.values())).step >= 3, 120, page.status.text())
    assert page.pause_button.isEnabled()
    page.pause_button.click()
    run_until(lambda: run_of(page, subject).status != "running" and not page.jobs.active_runs(), 60)
    run = run_of(page, subject)
    assert run.status == "cancelled" and run.resumable, (run.status, run.error)
    assert 3 <= run.step < 30 and (run.folder / "checkpoints").is_dir()
    assert "paused — progress kept" in page.run_list.item(0).text()
    paused_at = run.step

    assert page.resume_button.isEnabled()
    page.resume_button.click()
    run_until(lambda: run_of(page, subject).status in ("finished", "failed"), 120, page.status.text())
    run = run_of(page, subject)
    assert run.status == "finished" and run.result["step"] == 30, run.error
    # the curve goes on from the checkpoint: the steps before the pause are read back from disk (all of
    # them: the checkpoint keeps every loss), the later ones as reported (progress is throttled to 10/s)
    steps = page.monitor.loss_plot.steps
    assert steps[:paused_at] == list(range(1, paused_at + 1)) and steps[-1] == 30
    assert steps == sorted(set(steps))
    assert page.monitor.samples.steps() == [0, 30]
