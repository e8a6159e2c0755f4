"""The Evaluate page's "Putting the subject in" offscreen: the mode toggle, the runs and source
pictures it builds its job from, a stored result in the table (counts, "not available" reasons),
its exports, and a real ``evaluate_insertion`` job on the toy-world engine."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from engine.protocol.insertion import INSERTION_METRICS, INSERTION_NAME
from s2s_desktop import insertion_eval
from s2s_desktop.demo import toy_model_path
from s2s_desktop.library import Library
from s2s_desktop.library import runs as library_runs
from s2s_desktop.pages.evaluate import EvaluatePage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from s2s_desktop.widgets.evaluation_table import UNAVAILABLE
from tests.gui.test_compare import train_one_step
from tests.gui.test_evaluate_page import make_subject

TOY_INFO = {"name": "Toy world (demo)", "device": "cpu", "native_resolution": 64, "location": str(toy_model_path())}
NO_DINO = "DINO model facebook/dino-vits16 is not downloaded and this machine is offline"


def finished_run(library: Library, subject, method: str = "lora"):
    run = library_runs.create_run(library, subject, method, {"steps": 1}, "Toy world (demo)")
    run.exports_dir.mkdir(parents=True)
    (run.exports_dir / "run_config.json").write_text(json.dumps({"method": method, "token": "<dotty-star>"}))
    return library_runs.update_run(library, run.id, status="finished")


def stored_result(library: Library, subject, run_id: int):
    """A result folder as the engine leaves one (insertion.json; the pictures are not needed for the table)."""
    folder = insertion_eval.new_folder(library, subject)
    folder.mkdir(parents=True)
    scores = {"subject_rate": {"value": 0.75, "n": 4}, "structure": {"value": None, "unavailable": NO_DINO},
              "psnr_outside": {"value": 30.5, "n": 3, "warning": "1 of 4 source pictures left out"}}
    evaluation = {
        "version": 1, "kind": "insertion", "complete": True, "token": "<dotty-star>", "class_noun": "star",
        "into": "red", "area": "the source's and the edit's objects (toy evaluator)",
        "settings": {"steps": 25, "guidance": 7.5, "model": "Toy world (demo)"},
        "sources": [{"prompt": "a red star on a blue background", "target": "a <dotty-star> star", "seed": s}
                    for s in range(4)],
        "metrics": [{"name": n, **{k: INSERTION_METRICS[n][k] for k in ("title", "higher_is_better", "note")},
                     "model": ""} for n in scores],
        "rows": [{"column": f"run{run_id}", "label": f"#{run_id} LoRA", "scores": scores, "edits": []}],
        "best": None,
    }
    (folder / INSERTION_NAME).write_text(json.dumps(evaluation), encoding="utf-8")
    return folder


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def page(qtbot, library):
    page = EvaluatePage(QtEngine(), Settings.load(), library)  # an engine that is never started
    qtbot.addWidget(page)
    page.resize(1130, 640)
    page.show()
    page.set_model_info(TOY_INFO)
    return page


def test_the_toggle_shows_the_insertion_panel_and_builds_its_job(page, library, tmp_path):
    dotty = make_subject(library, tmp_path)
    run = finished_run(library, dotty)
    library_runs.create_run(library, dotty, "ti", {"steps": 1}, "Toy world (demo)")  # unfinished: not listed
    panel = page.insertion
    page.mode_buttons["insertion"].click()
    assert page.modes.currentWidget() is panel and panel.isVisible()
    assert panel.subject.currentData() == dotty.id and panel.runs.count() == 1
    assert panel.runs.item(0).checkState() == Qt.Checked and panel.chosen_runs() == [run.id]
    assert panel.prompts.toPlainText().splitlines()[0] == "a red star on a blue background"  # the toy sources
    assert "Toy scores: on" in panel.info.text() and panel.evaluate_button.isEnabled()
    assert "Not measured yet" in panel.empty.text() and not panel.export_buttons["html"].isEnabled()

    panel.seeds.setText("0-1")
    panel.into.setText("red")
    params, problem = panel.params()
    assert problem == ""
    assert len(params["sources"]) == 8 and params["sources"][1] == {"prompt": "a red star on a blue background",
                                                                    "seed": 1}
    [column] = params["runs"]
    assert column["key"] == f"run{run.id}" and column["adapter"]["scale"] == 1.5  # the measured insertion strength
    assert params["toy_subject"] == "Dotty" and params["into"] == "red" and params["token"] == "<dotty-star>"
    assert params["real_images"] == [str(r.path) for r in library.images(dotty.id)]
    assert params["out_dir"].startswith(str(library.subject_folder(dotty) / "insertion"))

    panel.from_folder.setChecked(True)
    panel.picture_folder.setText(str(tmp_path / "nowhere"))
    assert panel.params() == (None, f"{tmp_path / 'nowhere'}: not a folder")
    panel.runs.item(0).setCheckState(Qt.Unchecked)
    assert not panel.evaluate_button.isEnabled()
    page.mode_buttons["gallery"].click()
    assert page.modes.currentIndex() == 0 and not panel.isVisible()


def test_a_stored_result_fills_the_table_and_exports(page, library, tmp_path):
    dotty = make_subject(library, tmp_path)
    run = finished_run(library, dotty)
    stored_result(library, dotty, run.id)
    page.mode_buttons["insertion"].click()
    panel = page.insertion
    panel.refresh()
    assert panel.table.isVisible() and panel.table.rowCount() == 1
    rate = panel.table.cell(f"run{run.id}", "subject_rate")
    assert rate.text() == "0.750" and "from 4 images" in rate.toolTip()
    structure = panel.table.cell(f"run{run.id}", "structure")
    assert structure.text() == UNAVAILABLE and "not downloaded" in structure.toolTip()
    assert "⚠" in panel.table.cell(f"run{run.id}", "psnr_outside").text()
    assert "<b>Structure dist.</b> not available" in panel.notes.text()
    assert "“red” becomes &lt;dotty-star&gt; in 4 source picture(s)" in panel.summary.text()
    written = panel.export("markdown", tmp_path / "out" / "insertion")
    text = written.read_text(encoding="utf-8")
    assert written.suffix == ".md" and "| Run | Subject in (toy) ↑ | Structure dist. ↓ | PSNR outside ↑ | n |" in text
    assert panel.export("html", tmp_path / "out" / "insertion.html").is_file()
    assert "0.75" in panel.export("csv", tmp_path / "out" / "t.csv").read_text(encoding="utf-8")


def test_a_real_insertion_evaluation_fills_the_table(qtbot, aloop, run_until, toy_engine, library, tmp_path):
    dotty = make_subject(library, tmp_path)
    run = train_one_step(toy_engine, library, dotty, run_until)
    page = EvaluatePage(toy_engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.show()
    panel = page.insertion
    try:
        page.mode_buttons["insertion"].click()
        panel.refresh()
        assert panel.chosen_runs() == [run.id]
        panel.prompts.setPlainText("a red star on a blue background\na red star on a white background")
        panel.seeds.setText("1")
        panel.into.setText("red")
        panel.steps.setValue(4)
        panel.evaluate_button.click()
        run_until(lambda: panel.current_job is None and ("Scored" in panel.status.text()
                                                         or "failed" in panel.status.text()), 240, panel.status.text())
        assert panel.status.text().startswith("Scored 1 run(s)"), panel.status.text()
        key = f"run{run.id}"
        rate = panel.table.cell(key, "subject_rate")
        assert rate.text() != UNAVAILABLE and "from 2 images" in rate.toolTip()
        assert "from 2 images" in panel.table.cell(key, "clip_i").toolTip()  # the toy CLIP, offline
        assert panel.table.cell(key, "structure").text() == UNAVAILABLE  # no DINO offline: a reason instead
        assert (panel.folder / INSERTION_NAME).is_file() and len(list(panel.folder.glob(f"{key}/s0?-edited.png"))) == 2
        assert panel.export_buttons["html"].isEnabled()
    finally:
        if panel.current_job:
            toy_engine.cancel(panel.current_job)
        toy_engine.event.disconnect(page.on_event)
        toy_engine.event.disconnect(panel.on_event)
        toy_engine.state_changed.disconnect(page._on_engine_state)
