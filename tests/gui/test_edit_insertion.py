"""Putting a learned subject into a picture from the GUI: the Edit page's "Put … in" (the clicked word,
the insertion defaults, local blend), the ways there ("Try in a picture…" on the Library and Train
pages, the Compare grid's cell menu) and the batch over a folder of pictures, against a scripted
engine (the engine side is tested in tests/engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFileDialog

from engine.protocol.editing import (
    INSERTION_DEFAULTS,
    insertion_blend_words,
    insertion_target,
    normalise_word,
)
from s2s_desktop.edit_batch import CANCELLED, DONE, GRID_NAME, SKIPPED
from s2s_desktop.library import Library
from s2s_desktop.library import edits as library_edits
from s2s_desktop.library import runs as library_runs
from s2s_desktop.main_window import MainWindow
from s2s_desktop.pages.edit import EditPage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from tests.gui.test_compare import TOY_INFO as COMPARE_INFO
from tests.gui.test_compare import fake_finished_run, make_subject
from tests.gui.test_edit_page import SOURCE, TARGET, ScriptedEngine, picture, scripted_result


def generated_png(path: Path, prompt: str, seed: int, colour=(200, 60, 60)) -> str:
    """A PNG as the Generate page writes it: its prompt and seed in the A1111 parameters."""
    info = PngInfo()
    info.add_text("parameters", f"{prompt}\nSteps: 12, Sampler: DDIM, CFG scale: 7.5, Seed: {seed}, Size: 64x64, "
                                "Model: Toy world (demo)")
    Image.new("RGB", (64, 64), colour).save(path, pnginfo=info)
    return str(path)


def finished_run(library: Library, subject, method: str = "lora"):
    run = library_runs.create_run(library, subject, method, {"steps": 4}, "Toy world (demo)")
    run.exports_dir.mkdir(parents=True)
    (run.exports_dir / "run_config.json").write_text("{}")  # what makes a folder a finished run's export
    return library_runs.update_run(library, run.id, status="finished")


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def page_with_run(qtbot, aloop, library):
    """The Edit page (scripted engine) with Dotty's finished LoRA run chosen as the subject."""
    engine = ScriptedEngine()
    subject = library.create_subject("Dotty", "star")
    run = finished_run(library, subject)
    page = EditPage(engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.resize(1130, 700)
    page.show()
    page.form.source_prompt.setText(SOURCE)
    page.form.target_prompt.setText(TARGET)
    assert page.form.select_subject_run(str(run.exports_dir))
    yield page, engine, subject, run
    page.shutdown()


# ---------------------------------------------------------------------------------------------
# "Put … in"


def test_put_in_writes_the_insertion_target_and_sets_the_insertion_defaults(page_with_run, run_until, tmp_path):
    page, engine, subject, run = page_with_run
    form, token = page.form, subject.token
    page.edit_button.click()  # an edit on screen first: putting the subject in re-renders it live
    run_until(lambda: engine.submitted)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "first"))
    form.cross.set_value(0.3, quiet=True)
    form.self_attention.set_value(0.1, quiet=True)
    form.threshold.set_value(0.65, quiet=True)
    form.lora_scale.set_value(2.5, quiet=True)

    assert form.put_in_button.isEnabled() and form.put_in_button.text() == "Put Dotty in place of “star”"
    expected = insertion_target(TARGET, "star", token, "star")
    assert expected == f"a green {token} star on a blue background"
    assert "edited picture only" in form.subject_hint.text() and "original stays as it is" in form.subject_hint.text()
    form.put_in_button.click()

    assert form.target_prompt.text() == expected
    assert form.cross.value() == INSERTION_DEFAULTS["cross_steps"]
    assert form.self_attention.value() == INSERTION_DEFAULTS["self_steps"]
    assert form.threshold.value() == INSERTION_DEFAULTS["blend_threshold"]
    assert form.lora_scale.value() == INSERTION_DEFAULTS["lora_scale"]
    strip = page.view.strips["target"]
    assert strip.words() == expected.split()
    assert sorted(strip.blend_words()) == sorted(normalise_word(w) for w in insertion_blend_words(token, "star"))
    assert not form.put_in_button.isEnabled()  # the subject is in the prompt now

    run_until(lambda: len(engine.submitted) == 2)  # one live re-render with all of it
    params = engine.submitted[1]
    assert params["target_prompt"] == expected and params["source_prompt"] == SOURCE
    assert sorted(params["blend_words"]) == sorted([token, "star"])
    assert params["adapter"] == {"folder": str(run.exports_dir), "scale": INSERTION_DEFAULTS["lora_scale"]}
    d = INSERTION_DEFAULTS
    assert (params["cross_steps"], params["self_steps"], params["blend_threshold"], params["shared_steps"]) == (
        d["cross_steps"], d["self_steps"], d["blend_threshold"], d["shared_steps"])
    assert page.batch_button.text() == "Put Dotty in a folder of pictures…"


def test_the_clicked_word_is_where_the_subject_goes(page_with_run):
    page, _engine, subject, _run = page_with_run
    form, token = page.form, subject.token
    form.source_prompt.setText("a red circle on a blue background")
    form.target_prompt.setText("")
    assert not form.put_in_button.isEnabled()  # no "star" to replace and no word clicked
    assert "click a word in the token strip" in form.subject_hint.text()
    page.view.pick_words("source", ["red"])  # the page's own pick (a heatmap) is not a click
    assert form.picked_word == ""

    circle = page.view.strips["source"].chips[2]
    QTest.mouseClick(circle.word_button, Qt.LeftButton)
    assert form.picked_word == "circle"
    assert form.put_in_button.isEnabled() and form.put_in_button.text() == "Put Dotty in place of “circle”"
    form.put_in_button.click()
    assert form.target_prompt.text() == f"a red {token} star on a blue background"

    form.target_prompt.setText(TARGET)
    green = page.view.strips["target"].chips[1]
    QTest.mouseClick(green.word_button, Qt.LeftButton)  # the word before the class noun: the token alone
    assert form.put_in_button.text() == "Put Dotty in place of “green”"
    form.put_in_button.click()
    assert form.target_prompt.text() == f"a {token} star on a blue background"


# ---------------------------------------------------------------------------------------------
# the ways to the Edit page


@pytest.fixture
def window(qtbot, aloop, isolated_home, tmp_path):
    win = MainWindow(QtEngine(), Settings.load(), start_engine=False)
    qtbot.addWidget(win)
    win.show()
    library = win.library_page.library
    subject = make_subject(library, tmp_path)
    yield win, library, subject
    win.close()


def test_try_in_a_picture_from_the_library_and_the_train_page(window, monkeypatch, tmp_path):
    win, library, subject = window
    done = fake_finished_run(library, subject, "lora")
    unfinished = library_runs.create_run(library, subject, "ti", {"steps": 10}, "Toy world (demo)")
    chosen = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: chosen.pop(0) if chosen else ("", ""))

    win.show_page("library")
    win.library_page.refresh_subjects(select_id=subject.id)
    buttons = win.library_page.view.activity_panel.try_buttons
    assert set(buttons) == {done.id}  # only a finished run can be tried
    buttons[done.id].click()  # the file dialog is cancelled: the page with the run chosen
    edit = win.edit_page
    assert win.stack.currentWidget() is edit
    assert edit.form.subject.currentData() == str(done.exports_dir) and edit.form.source_image == ""
    assert edit.form.put_in_button.text().startswith("Put Dotty in")

    edit.form.subject.setCurrentIndex(0)
    win.show_page("train")
    train = win.train_page
    train.refresh_subjects(select_id=subject.id)
    rows = {train.run_list.item(i).data(Qt.UserRole): i for i in range(train.run_list.count())}
    train.run_list.setCurrentRow(rows[unfinished.id])
    assert not train.subjects.try_button.isEnabled()
    train.run_list.setCurrentRow(rows[done.id])
    assert train.subjects.try_button.isEnabled()
    photo = picture(tmp_path / "photo.png", (200, 40, 40))
    chosen.append((photo, ""))
    train.subjects.try_button.click()
    assert win.stack.currentWidget() is edit
    assert edit.form.subject.currentData() == str(done.exports_dir)
    assert edit.form.source_image == photo and edit.view.pictures["original"] is not None


def test_the_compare_cell_menu_edits_an_image_or_puts_the_subject_in(window, run_until, tmp_path):
    win, library, subject = window
    run = fake_finished_run(library, subject, "lora")
    compare = win.generate_page.compare
    submitted = []

    async def submit(kind, params, label=""):
        submitted.append(params)
        return "job-1"

    compare.engine.submit = submit
    compare.set_model_info(COMPARE_INFO)
    compare.refresh_subjects(select_id=subject.id)
    row = next(r for r in compare.column_rows if r.run is not None and r.run.id == run.id)
    row.check.setChecked(True)
    row.scale.setValue(0.7)
    compare.templates.setPlainText("a red {class} on a blue background")
    compare.seeds.setText("3")
    compare.on_generate()
    run_until(lambda: compare.current_job == "job-1")
    base_png = generated_png(tmp_path / "base.png", "a red star on a blue background", 3)
    run_png = generated_png(tmp_path / "run.png", "a red star on a blue background", 3, (240, 140, 40))
    for key, path in (("base", base_png), (f"run{run.id}", run_png)):
        compare.engine.event.emit({"type": "event", "job": "job-1", "event": "artifact", "kind": "image",
                                   "column": key, "row": 0, "seed": 3, "path": path})
    assert compare.grid.image_count() == 2

    menu = compare.image_menu(base_png, "base")
    edit_action, put_action = menu.actions()
    assert edit_action.text() == "Edit" and put_action.text() == "Put Dotty in" and put_action.isEnabled()
    edit_action.trigger()
    page, form = win.edit_page, win.edit_page.form
    assert win.stack.currentWidget() is page and form.source_image == base_png
    assert form.subject.currentData() is None  # the base model's image: no run
    assert form.source_prompt.text() == "a red star on a blue background" and form.seed.value() == 3

    compare.image_menu(run_png, f"run{run.id}").actions()[0].trigger()
    assert form.source_image == run_png and form.subject.currentData() == str(run.exports_dir)
    assert form.lora_scale.value() == 0.7  # the column's scale, so it regenerates as drawn

    win.show_page("generate")
    compare.image_menu(base_png, "base").actions()[1].trigger()  # the subject's newest finished run
    assert win.stack.currentWidget() is page and form.source_image == base_png
    assert form.subject.currentData() == str(run.exports_dir)
    assert form.target_prompt.text() == f"a red {subject.token} star on a blue background"
    assert sorted(page.view.strips["target"].blend_words()) == sorted([subject.token, "star"])
    assert form.lora_scale.value() == INSERTION_DEFAULTS["lora_scale"]


# ---------------------------------------------------------------------------------------------
# a folder of pictures


def test_a_batch_edits_every_picture_fills_the_grid_records_and_exports(page_with_run, library, run_until,
                                                                        tmp_path):
    page, engine, _subject, _run = page_with_run
    page.form.subject.setCurrentIndex(0)  # a plain edit (red → green), no subject
    folder = tmp_path / "pictures"
    folder.mkdir()
    made = generated_png(folder / "a-made.png", SOURCE, 11)
    other = generated_png(folder / "b-heart.png", "a red heart on a white background", 12)
    photo = picture(folder / "c-photo.jpg", (200, 40, 40))
    (folder / "notes.txt").write_text("not a picture")
    view = page.start_batch([made, other, photo])
    assert view is not None and len(view.batch.items) == 3

    out = tmp_path / "results"
    out.mkdir()
    for n in range(1, 4):
        run_until(lambda n=n: len(engine.submitted) == n, 10, view.status.text())
        engine.send(f"job-{n}", "progress", step=2, total=12, phase="editing")
        assert "step 2/12" in view.edits[n - 1].text()
        engine.send(f"job-{n}", "finished", result=scripted_result(out, f"pic{n}"))
        run_until(lambda n=n: view.edited_count() == n, 10)  # the row fills as the result arrives
    run_until(lambda: view.batch.over, 10)
    first, second, third = engine.submitted
    assert first["image"] == "" and first["seed"] == 11 and first["source_prompt"] == SOURCE  # regenerated
    assert first["target_prompt"] == TARGET and (first["width"], first["height"]) == (64, 64)
    assert second["source_prompt"] == "a red heart on a white background" and second["seed"] == 12
    assert second["target_prompt"] == "a green heart on a white background"  # the form's change, on its prompt
    assert third["image"] == photo and third["invert"] == "direct"  # a photo is inverted with the form's prompt
    assert third["source_prompt"] == SOURCE and third["target_prompt"] == TARGET
    assert "adapter" not in first
    assert view.status.text() == "3 of 3 pictures edited." and not view.cancel_button.isEnabled()
    assert len(library_edits.list_edits(library)) == 3 and len(view.recorded) == 3

    written = view.export_to(tmp_path / "export")
    assert [p.name for p in written] == [GRID_NAME, "a-made-edited.png", "b-heart-edited.png", "c-photo-edited.png"]
    grid = Image.open(written[0])
    assert grid.height == 30 + 3 * (160 + 6) + 6 and grid.width == 200 + 2 * (160 + 6) + 6
    assert Image.open(written[1]).tobytes() == Image.open(out / "pic1-edited.png").tobytes()


def test_cancel_stops_the_batch_and_keeps_the_finished_pictures(page_with_run, library, run_until, tmp_path):
    page, engine, subject, run = page_with_run
    token = subject.token
    page.form.put_in_button.click()  # put Dotty in: the batch puts her into every picture's own prompt
    prompts = ["a red star on a blue background", "a star on a white background", "a purple star on a gray background"]
    pictures = [generated_png(tmp_path / f"p{i}.png", p, 20 + i) for i, p in enumerate(prompts)]
    view = page.start_batch(pictures)
    assert view.windowTitle() == "Put Dotty into 3 pictures"
    run_until(lambda: engine.submitted, 10)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "one"))
    run_until(lambda: len(engine.submitted) == 2, 10)
    view.cancel_button.click()
    assert engine.cancelled == ["job-2"]  # the running job; the third picture never starts
    engine.send("job-2", "cancelled")
    run_until(lambda: view.batch.over, 10)
    assert [item.state for item in view.batch.items] == [DONE, CANCELLED, SKIPPED]
    assert len(engine.submitted) == 2 and view.edited_count() == 1
    assert "1 of 3 pictures edited" in view.status.text() and "1 not started" in view.status.text()
    # the form's own prompt keeps the form's whole target (red → green too); another prompt gets the subject
    expected = [page.form.target_prompt.text(), insertion_target(prompts[1], "star", token, "star")]
    assert expected == [f"a green {token} star on a blue background", f"a {token} star on a white background"]
    for params, prompt, target in zip(engine.submitted, prompts[:2], expected, strict=True):
        assert params["source_prompt"] == prompt and params["image"] == ""
        assert params["target_prompt"] == target
        assert params["adapter"]["folder"] == str(run.exports_dir)
        assert sorted(params["blend_words"]) == sorted([token, "star"])
    [edit] = library_edits.list_edits(library, subject_id=subject.id)
    assert edit.params["source_prompt"] == prompts[0]
    written = view.export_to(tmp_path / "export")
    assert [p.name for p in written] == [GRID_NAME, "p0-edited.png"]
