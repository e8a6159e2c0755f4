"""Generate → Compare offscreen: its form without an engine (columns, prompt lists, seeds), then real
galleries on the shipped toy-world model: the base model, a one-step LoRA run and its checkpoint
fill the grid and land in the library; a cancelled gallery keeps what it made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.protocol.training import preset
from s2s_desktop.library import ImportLimits, Library, galleries, import_files
from s2s_desktop.library import runs as library_runs
from s2s_desktop.pages.compare import ComparePanel
from s2s_desktop.pages.generate import GeneratePage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings

TOY_INFO = {"name": "Toy world (demo)", "device": "cpu", "native_resolution": 64, "location": "/x/toy-world"}
OTHER_INFO = {"name": "sd15", "device": "cpu", "native_resolution": 512, "location": "/models/sd15"}


def make_subject(library: Library, folder: Path, name: str = "Dotty", noun: str = "star", photos: int = 2):
    subject = library.create_subject(name, noun)
    paths = []
    for i in range(photos):
        pixels = np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        paths.append(folder / f"{name}-{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    import_files(library, subject, paths, ImportLimits())
    return library.subject(subject.id)


def fake_finished_run(library: Library, subject, method: str = "lora", checkpoints: tuple[int, ...] = ()):
    """A run row with the files a finished run leaves (no weights: for the form, not for generating)."""
    run = library_runs.create_run(library, subject, method, {"steps": 10}, "Toy world (demo)")
    (run.exports_dir).mkdir(parents=True)
    (run.exports_dir / "run_config.json").write_text("{}", encoding="utf-8")
    for step in checkpoints:
        folder = run.folder / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "state.json").write_text("{}", encoding="utf-8")
    return library_runs.update_run(library, run.id, status="finished", step=10, result={"step": 10})


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def offline(qtbot, library, tmp_path):
    """The Compare panel with an engine that is never started (and a stand-in for submit)."""
    subject = make_subject(library, tmp_path)
    engine = QtEngine()
    submitted = []

    async def submit(kind, params, label=""):
        submitted.append((kind, params))
        return "job-1"

    engine.submit = submit
    panel = ComparePanel(engine, Settings.load(), library)
    qtbot.addWidget(panel)
    panel.resize(1100, 700)
    panel.show()
    panel.set_model_info(TOY_INFO)
    return panel, subject, submitted


# ---------------------------------------------------------------------------------------------
# without an engine


def test_invalid_seeds_show_an_error_and_submit_nothing(offline, run_until):
    panel, _subject, submitted = offline
    panel.seeds.setText("3-1")
    assert panel.seeds_error.isVisible() and "'3-1' is not" in panel.seeds_error.text()
    assert "0 seeds = <b>0</b> images" in panel.summary.text()
    panel.generate_button.click()
    run_until(lambda: "Seeds:" in panel.status.text(), 5)
    assert panel.status.styleSheet() and not submitted and panel.grid.image_count() == 0
    panel.seeds.setText("0-1, 5")
    assert not panel.seeds_error.isVisible()
    assert panel.parsed_seeds() == ([0, 1, 5], "")
    assert "3 seeds = <b>24</b> images" in panel.summary.text()  # base × 8 toy prompts × 3 seeds


def test_prompt_lists_follow_the_model_and_can_be_saved(offline, library):
    panel, _subject, _ = offline
    assert panel.prompt_list.currentData() == "toy-world"  # the toy demo model's own scenes
    assert panel.templates.toPlainText().splitlines()[0] == "a photo of {token} {class}"
    panel.set_model_info(OTHER_INFO)  # a real model: the paper's 20 prompts, at its own size
    assert panel.prompt_list.currentData() == "paper-20" and len(panel.templates.toPlainText().splitlines()) == 20
    assert panel.width_box.value() == 512
    panel.templates.setPlainText("a {token} {class} on the moon\n# a comment\n\na {token} {class} in a cup")
    panel.set_model_info(TOY_INFO)  # the user's edits are not swapped out by a model change
    assert "on the moon" in panel.templates.toPlainText()
    path = panel.save_list("Moon & cup")
    assert path == library.home / "prompt-lists" / "Moon-cup.txt"
    assert galleries.read_prompt_list(path) == ["a {token} {class} on the moon", "a {token} {class} in a cup"]
    assert panel.prompt_list.currentData() == "Moon-cup" and panel.prompt_list.currentText() == "Moon-cup"
    assert panel.save_list("paper-20") is None and "shipped list" in panel.status.text()


def test_columns_runs_scales_and_checkpoints(offline, library):
    panel, subject, _ = offline
    lora = fake_finished_run(library, subject, "lora", checkpoints=(5, 10))
    ti = fake_finished_run(library, subject, "ti")
    panel.refresh_subjects()
    rows = {row.run.id: row for row in panel.column_rows if row.run}
    assert set(rows) == {lora.id, ti.id}
    assert rows[lora.id].scale is not None and rows[ti.id].scale is None  # TI has no LoRA scale
    assert not rows[lora.id].scale.isEnabled()
    rows[lora.id].check.setChecked(True)
    rows[lora.id].scale.setValue(0.7)
    panel.checkpoints.setCurrentIndex(panel.checkpoints.findData(lora.id))
    panel.prior.setChecked(True)
    panel.seeds.setText("0-1")
    assert "4 columns × 8 prompts × 2 seeds = <b>72</b> images (8 of the class prompt)" in panel.summary.text()
    params, problem = panel.params()
    assert problem == ""
    assert [c["key"] for c in params["columns"]] == ["base", f"run{lora.id}", f"run{lora.id}-step5",
                                                      f"run{lora.id}-step10"]
    assert params["columns"][1]["adapter"]["scale"] == 0.7 and "×0.7" in params["columns"][1]["label"]
    assert params["prior_prompt"] == "a photo of a {class}" and params["class_noun"] == "star"
    assert params["token"] == subject.token and params["width"] == 64
    assert Path(params["out_dir"]).parent == library.subject_folder(subject) / "galleries"
    panel.base_row.check.setChecked(False)
    rows[lora.id].check.setChecked(False)
    panel.checkpoints.setCurrentIndex(0)
    assert panel.params() == (None, "Tick at least one column: the base model or a run.")


def test_the_generate_page_switches_between_single_and_compare(qtbot, library):
    page = GeneratePage(QtEngine(), Settings.load(), library)
    qtbot.addWidget(page)
    page.show()
    assert page.mode() == "single" and page.modes.currentWidget() is page.single
    page.compare_button.click()
    assert page.mode() == "compare" and page.compare.isVisible() and not page.prompt.isVisible()
    page.mode_buttons.button(0).click()
    assert page.mode() == "single" and page.prompt.isVisible()
    without = GeneratePage(QtEngine(), Settings.load(), None, library_problem="the catalog is damaged")
    qtbot.addWidget(without)
    assert not without.compare_button.isEnabled() and "damaged" in without.compare_button.toolTip()


# ---------------------------------------------------------------------------------------------
# with the engine and the toy-world model


def train_one_step(engine, library: Library, subject, run_until):
    """A real LoRA run of one step (no prior, no samples): weights a gallery can load."""
    config = preset("lora", 2, "cpu", toy=True)
    config.update(steps=1, batch=1, prior=False, sample_every=0, checkpoint_every=1,
                  sample_prompts=["a photo of {token} {class}"], sample_seeds=[0], sample_steps=1)
    run = library_runs.create_run(library, subject, "lora", config, "Toy world (demo)")
    images = library_runs.prepare_training_images(library, subject.id, run.folder, 64)
    params = library_runs.train_params(library, subject, "lora", config, run.folder, images)
    future = engine.client.submit("train", params, "one step")
    job = future.result(timeout=30)["job"]
    run_until(lambda: engine.jobs[job].done, 180, "the training run never ended")
    record = engine.jobs[job]
    assert record.state == "finished", record.error
    return library_runs.update_run(library, run.id, status="finished", step=1, result=record.result)


@pytest.fixture
def engine_panel(qtbot, aloop, toy_engine, library, tmp_path):
    subject = make_subject(library, tmp_path)
    panel = ComparePanel(toy_engine, Settings.load(), library)
    qtbot.addWidget(panel)
    panel.resize(1100, 700)
    panel.show()
    assert panel.is_toy_model() and panel.width_box.value() == 64
    yield panel, subject
    if panel.current_job:
        toy_engine.cancel(panel.current_job)
    toy_engine.event.disconnect(panel.on_event)
    toy_engine.state_changed.disconnect(panel._on_engine_state)


def test_a_gallery_of_the_base_model_a_run_and_its_checkpoint(engine_panel, library, run_until, toy_engine):
    panel, subject = engine_panel
    run = train_one_step(toy_engine, library, subject, run_until)
    panel.refresh_subjects()
    (row,) = [r for r in panel.column_rows if r.run]
    row.check.setChecked(True)
    row.scale.setValue(0.8)
    panel.checkpoints.setCurrentIndex(panel.checkpoints.findData(run.id))
    panel.templates.setPlainText("a photo of {token} {class} on a blue background")
    panel.seeds.setText("7")
    panel.steps.setValue(4)
    panel.prior.setChecked(True)
    requested = []
    panel.evaluate_requested.connect(requested.append)

    panel.generate_button.click()
    run_until(lambda: panel.gallery is not None or "Failed" in panel.status.text(), 180, panel.status.text())
    assert panel.status.text().startswith("Done: 6 images") and "Saved as gallery #" in panel.status.text()
    keys = ["base", f"run{run.id}", f"run{run.id}-step1"]
    assert [key for key, _ in panel.grid.columns] == keys
    assert panel.grid.image_count() == 6  # 3 columns × (1 prompt + the class prompt) × 1 seed
    for key in keys:
        assert panel.grid.cell_seeds(key, 0) == [7] and panel.grid.cell_seeds(key, -1) == [7]

    (gallery,) = galleries.list_galleries(library, subject.id)
    assert gallery.id == panel.gallery.id
    manifest = gallery.manifest()
    assert manifest["complete"] and len(manifest["images"]) == 6
    assert manifest["prompts"] == ["a photo of {token} {class} on a blue background"]
    made = library._connection().execute(
        "SELECT run_id, params FROM generations WHERE gallery_id = ?", (gallery.id,)).fetchall()
    assert len(made) == 6 and sorted(r["run_id"] or 0 for r in made) == [0, 0] + [run.id] * 4
    assert {json.loads(r["params"])["column"] for r in made} == set(keys)

    thumb = panel.grid.thumbs[(f"run{run.id}", 0, 7)]
    viewer = panel.show_image(thumb.path, thumb.parameters)
    text = viewer.text.toPlainText()
    assert viewer.isVisible() and "Seed: 7" in text and "Lora scale: 0.8" in text and subject.token in text
    viewer.close()

    panel.grid.clear()  # reopened from the manifest: the same cells
    assert panel.earlier.findData(gallery.id) == panel.earlier.currentIndex()
    assert panel.open_gallery(gallery.id) and panel.grid.image_count() == 6
    panel.seed_view.setCurrentIndex(panel.seed_view.findData(7))
    assert panel.grid.thumb_size() == 192
    assert panel.evaluate_button.isEnabled()
    panel.evaluate_button.click()
    assert requested == [gallery.id]


def test_cancel_keeps_the_images_made_so_far(engine_panel, library, run_until, toy_engine):
    panel, subject = engine_panel
    panel.templates.setPlainText("a photo of {token} {class}\na photo of {token} {class} on a gray background")
    panel.seeds.setText("0-2")
    panel.steps.setValue(6)
    panel.batch.setValue(1)
    panel.generate_button.click()
    run_until(lambda: panel.grid.image_count() >= 1 or "Failed" in panel.status.text(), 120, panel.status.text())
    panel.cancel_button.click()
    run_until(lambda: panel.current_job is None, 60, panel.status.text())
    made = panel.grid.image_count()
    assert 1 <= made < 6 and panel.status.text().startswith(f"Cancelled after {made} of 6 images")
    (gallery,) = galleries.list_galleries(library, subject.id)
    manifest = gallery.manifest()
    assert not manifest["complete"] and len(manifest["images"]) == made
    assert panel.generate_button.isEnabled() and not panel.cancel_button.isEnabled()
