"""The Edit page offscreen: its widgets and job handling against a scripted engine, then real
Prompt-to-Prompt edits with the shipped toy-world model in a real engine subprocess."""

from __future__ import annotations

import html
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from PySide6.QtCore import QObject, QPoint, Qt, Signal
from PySide6.QtTest import QTest

from s2s_desktop.library import Library
from s2s_desktop.library import edits as library_edits
from s2s_desktop.library import runs as library_runs
from s2s_desktop.library.heatmaps import HeatmapChoice, attention_map, upsample
from s2s_desktop.pages.edit import EditPage
from s2s_desktop.pages.edit_form import REGENERATE
from s2s_desktop.settings import Settings
from s2s_desktop.widgets.token_strip import TokenStrip
from tests.helpers.heatmaps import write_heatmaps

TOY_INFO = {"name": "Toy world (demo)", "device": "cpu", "native_resolution": 64}
SOURCE = "a red star on a blue background"
TARGET = "a green star on a blue background"


class ScriptedEngine(QObject):
    """Answers submits with job ids and records cancels; the test sends the events."""

    event = Signal(dict)
    state_changed = Signal(str, str)

    def __init__(self):
        super().__init__()
        self.client = SimpleNamespace(loaded_model=TOY_INFO)
        self.jobs: dict = {}
        self.submitted: list[dict] = []
        self.cancelled: list[str] = []

    async def submit(self, kind: str, params: dict, label: str = "") -> str:
        assert kind == "edit"
        self.submitted.append(params)
        return f"job-{len(self.submitted)}"

    def cancel(self, job: str) -> None:
        self.cancelled.append(job)

    def send(self, job: str, event: str, **fields) -> None:
        self.event.emit({"type": "event", "job": job, "event": event, **fields})


def picture(path, colour) -> str:
    pixels = np.full((64, 64, 3), (165, 200, 240), np.uint8)
    pixels[8:24, 8:24] = colour  # the "star" sits top left, where its heatmap is hot
    Image.fromarray(pixels).save(path)
    return str(path)


def scripted_result(folder, name: str, target: str = TARGET) -> dict:
    heatmaps = write_heatmaps(folder / f"{name}-heatmaps.npz", {"source": SOURCE, "target": target},
                              hot={("target", 2): (0.25, 0.25), ("source", 2): (0.25, 0.25)})
    return {
        "original": picture(folder / f"{name}-original.png", (215, 38, 38)),
        "edited": picture(folder / f"{name}-edited.png", (35, 160, 55)),
        "heatmaps": str(heatmaps), "reconstruction": "", "reconstruction_psnr": None, "mode": "replace",
        "notes": ["replace needs words of equal token length; used refine"], "reused_source": False,
        "source_words": [{"word": w, "tokens": [i + 1]} for i, w in enumerate(SOURCE.split())],
        "target_words": [{"word": w, "tokens": [i + 1]} for i, w in enumerate(target.split())],
        "seconds": 0.5,
    }


def wait(run_until, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    run_until(lambda: time.monotonic() > deadline)


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def scripted(qtbot, aloop, library):
    engine = ScriptedEngine()
    page = EditPage(engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.resize(1130, 700)
    page.show()
    page.form.source_prompt.setText(SOURCE)
    page.form.target_prompt.setText(TARGET)
    yield page, engine
    page.shutdown()


# ---------------------------------------------------------------------------------------------
# widgets


def test_the_token_strip_reweights_blends_and_selects_words(qtbot):
    strip = TokenStrip()
    qtbot.addWidget(strip)
    strip.show()
    strip.set_prompt("a red star, on blue")
    assert strip.words() == ["a", "red", "star,", "on", "blue"]
    changes, blends, selections = [], [], []
    strip.reweight_changed.connect(lambda word, weight: changes.append((word, weight)))
    strip.blend_changed.connect(blends.append)
    strip.selection_changed.connect(selections.append)

    star = strip.chips[2]
    star.slider.setValue(25)
    assert changes == [("star", 2.5)]  # punctuation and case do not count
    assert star.weight_label.text() == "×2.5" and strip.reweights() == {"star": 2.5}
    star.slider.setValue(star.slider.minimum())
    assert changes[-1] == ("star", -2.0)
    QTest.mouseDClick(star.slider, Qt.LeftButton)  # double-click: back to 1
    assert changes[-1] == ("star", 1.0) and strip.reweights() == {}

    strip.chips[1].slider.setValue(30)
    strip.chips[1].blend_button.click()
    assert blends == [["red"]] and strip.blend_words() == ["red"]
    strip.set_prompt("a red star, on a green field")  # editing the prompt keeps the other words' settings
    assert strip.reweights() == {"red": 3.0} and strip.blend_words() == ["red"]

    QTest.mouseClick(strip.chips[2].word_button, Qt.LeftButton)
    QTest.mouseClick(strip.chips[6].word_button, Qt.LeftButton, Qt.ControlModifier)
    assert selections == [[2], [2, 6]] and strip.chips[6].property("selected")
    QTest.mouseClick(strip.chips[1].word_button, Qt.LeftButton)
    assert selections[-1] == [1] and not strip.chips[2].property("selected")

    strip.set_token_info([{"word": "a", "tokens": [1]}, {"word": "red", "tokens": [2, 3]}],
                         ["<|startoftext|>", "a</w>", "re", "d</w>"])
    assert "tokens 2, 3 (re d</w>)" in strip.chips[1].word_button.toolTip()
    assert "after the next edit" in strip.chips[4].word_button.toolTip()


def test_a_generated_png_is_regenerated_and_a_photo_is_inverted(scripted, tmp_path):
    page, _ = scripted
    info = PngInfo()
    info.add_text("parameters", "a purple heart on a white background\nSteps: 30, Sampler: DDIM, CFG scale: 6, "
                                "Seed: 1234, Size: 96x64, Model: Toy world (demo)")
    generated = tmp_path / "generated.png"
    Image.new("RGB", (96, 64), (200, 200, 200)).save(generated, pnginfo=info)
    page.open_source(str(generated))
    form = page.form
    assert form.source_prompt.text() == "a purple heart on a white background" and form.seed.value() == 1234
    assert form.steps.value() == 30 and form.guidance.value() == 6.0
    assert form.invert.currentData() == REGENERATE and "no inversion needed" in form.source_text.text()
    params = page.job_params()
    assert params["image"] == "" and params["seed"] == 1234 and "invert" not in params
    assert (params["width"], params["height"]) == (96, 64)  # regenerated at its own size

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (10, 120, 30)).save(photo)
    page.open_source(str(photo))
    assert form.invert.currentData() == "direct" and "inverted first" in form.source_text.text()
    form.invert.setCurrentIndex(form.invert.findData("nulltext"))
    params = page.job_params()
    assert params["image"] == str(photo) and params["invert"] == "nulltext"

    (tmp_path / "notes.txt").write_text("hello")
    page.open_source(str(tmp_path / "notes.txt"))
    assert "not a picture" in page.status.text() and form.source_image == str(photo)  # nothing lost
    form.clear_button.click()
    assert page.job_params()["image"] == "" and not form.invert.isEnabled()


def test_a_subjects_run_is_applied_and_put_into_the_target_prompt(scripted, library, run_until, tmp_path):
    page, engine = scripted
    subject = library.create_subject("Dotty", "star")
    run = library_runs.create_run(library, subject, "lora", {"steps": 4}, "Toy world (demo)")
    run.exports_dir.mkdir(parents=True)
    (run.exports_dir / "run_config.json").write_text("{}")  # what makes a folder a finished run's export
    library_runs.update_run(library, run.id, status="finished")
    page.refresh_library()
    form = page.form
    assert form.subject.count() == 2 and "Dotty · LoRA run" in form.subject.itemText(1)
    form.subject.setCurrentIndex(1)
    assert form.put_in_button.text() == "Put Dotty in place of “star”"
    assert f"The target becomes “a green {subject.token} star on a blue background”" in html.unescape(
        form.subject_hint.text())
    form.put_in_button.click()
    assert form.target_prompt.text() == f"a green {subject.token} star on a blue background"
    assert not form.put_in_button.isEnabled() and "edited picture only" in form.subject_hint.text()
    form.lora_scale.set_value(0.75)
    assert page.job_params()["adapter"] == {"folder": str(run.exports_dir), "scale": 0.75}
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "dotty"))
    assert [e.id for e in library_edits.list_edits(library, subject_id=subject.id)] == page.history.edit_ids()


# ---------------------------------------------------------------------------------------------
# jobs, against the scripted engine


def test_an_edit_shows_progress_the_result_heatmaps_and_history(scripted, run_until, tmp_path, library):
    page, engine = scripted
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    params = engine.submitted[0]
    assert params["source_prompt"] == SOURCE and params["target_prompt"] == TARGET and params["heatmaps"]
    assert params["out_dir"].endswith("edits") and "reweight" not in params
    engine.send("job-1", "started")
    engine.send("job-1", "progress", step=2, total=20, phase="inverting")
    assert page.status.text() == "Inverting… step 2/20"
    engine.send("job-1", "progress", step=3, total=10, phase="editing")
    assert page.status.text() == "Editing… step 3/10" and page.progress.value() == 3
    assert page.cancel_button.isEnabled()

    result = scripted_result(tmp_path, "one")
    engine.send("job-1", "finished", result=result)
    assert page.status.text().startswith("Done in 0.5 s")
    assert "used refine" in page.notes.text() and page.notes.isVisible()
    assert page.view.pictures["edited"].shape == (64, 64, 3) and page.view.canvas.view == "edited"
    assert page.view.strips["target"].selected == [1]  # the changed word, "green", ready for the heatmap
    page.view.pick_words("target", ["star"])
    assert page.view.canvas.view == "heatmap" and page.view.overlay_pixels is not None
    page.view.heatmap_controls.alpha.set_value(1.0)  # the colours alone
    overlay = page.view.overlay_pixels.astype(float).sum(axis=2)
    scale = overlay.shape[0] / 64
    assert overlay[int(16 * scale), int(16 * scale)] > 2 * overlay[int(48 * scale), int(48 * scale)]  # hot on the star
    assert "CLIP token 3 (star</w>)" in page.view.strips["target"].chips[2].word_button.toolTip()

    [edit] = library_edits.list_edits(library)
    assert edit.file == result["edited"] and edit.params == {k: v for k, v in params.items() if k != "name"}
    assert params["name"].startswith("edit-")  # unique per render: re-renders come several a second
    assert page.history.edit_ids() == [edit.id]

    (tmp_path / "export").mkdir()
    exported = page.export_to(tmp_path / "export" / "mine.png", with_heatmap=True)
    assert [p.name for p in exported] == ["mine.png", "mine-heatmap.png"]
    assert Image.open(exported[1]).size == (512, 512)


def test_failures_show_the_message_and_hint_and_keep_the_last_edit(scripted, run_until, tmp_path):
    page, engine = scripted
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "ok"))
    page.form.target_prompt.setText("a green star on a blue background " + "very " * 80)
    page.edit_button.click()
    run_until(lambda: len(engine.submitted) == 2)
    engine.send("job-2", "failed", error={"message": "the target prompt is too long (90 tokens, at most 77)",
                                          "hint": "shorten it"})
    assert "too long" in page.status.text() and "shorten it" in page.status.text()
    assert page.view.pictures["edited"] is not None  # the last edit is still on screen
    assert "very" in page.form.target_prompt.text()  # and the form as the user left it

    page.form.source_prompt.setText("")
    page.edit_button.click()
    assert "Type a source prompt" in page.status.text() and len(engine.submitted) == 2


def test_cancel_stops_the_edit_in_flight(scripted, run_until):
    page, engine = scripted
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    page.cancel_button.click()
    assert engine.cancelled == ["job-1"] and page.status.text() == "Cancelling…"
    engine.send("job-1", "cancelled")
    assert page.status.text().startswith("Cancelled") and not page.cancel_button.isEnabled()


def test_slider_moves_are_debounced_and_a_stale_render_is_cancelled(scripted, run_until, tmp_path, library):
    page, engine = scripted
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "first"))
    star = page.view.strips["target"].chips[2]

    for value in (12, 14, 16, 18, 20):  # five quick moves of the "star" slider
        star.slider.setValue(value)
    wait(run_until, 0.6)
    assert len(engine.submitted) == 2, "five moves, one render"
    assert engine.submitted[1]["reweight"] == {"star": 2.0}

    star.slider.setValue(30)  # job-2 is still rendering: it is stale now
    run_until(lambda: len(engine.submitted) == 3)
    assert engine.cancelled == ["job-2"] and engine.submitted[2]["reweight"] == {"star": 3.0}
    engine.send("job-2", "finished", result=scripted_result(tmp_path, "stale"))  # too late: ignored
    assert page.result["edited"].endswith("first-edited.png")
    latest = dict(scripted_result(tmp_path, "latest"), reused_source=True)
    engine.send("job-3", "finished", result=latest)
    assert page.result["edited"].endswith("latest-edited.png") and "source reused" in page.status.text()
    # the history keeps one entry per Edit press, at its latest slider state
    [edit] = library_edits.list_edits(library)
    assert edit.params["reweight"] == {"star": 3.0}

    page.view.strips["target"].chips[2].slider.setValue(30)  # unchanged: nothing to render
    page.live.setChecked(False)
    page.view.strips["target"].chips[1].slider.setValue(20)  # live off: nothing either
    wait(run_until, 0.4)
    assert len(engine.submitted) == 3


def test_history_restores_an_edit(scripted, run_until, tmp_path, library):
    page, engine = scripted
    page.view.strips["target"].chips[1].slider.setValue(25)
    page.edit_button.click()
    run_until(lambda: engine.submitted)
    engine.send("job-1", "finished", result=scripted_result(tmp_path, "first"))
    page.form.source_prompt.setText("a blue heart on a gray background")
    page.form.target_prompt.setText("a yellow heart on a gray background")
    page.view.strips["target"].chips[1].slider.setValue(10)

    page.history.refresh()
    item = page.history.list.item(0)
    page.history.list.itemClicked.emit(item)
    assert page.form.source_prompt.text() == SOURCE and page.form.target_prompt.text() == TARGET
    assert page.view.strips["target"].reweights() == {"green": 2.5}
    assert page.view.pictures["edited"] is not None and "Restored" in page.status.text()
    wait(run_until, 0.4)
    assert len(engine.submitted) == 1  # restoring re-renders nothing
    page.view.strips["target"].chips[1].slider.setValue(35)  # a live change of a restored edit
    run_until(lambda: len(engine.submitted) == 2)
    engine.send("job-2", "finished", result=scripted_result(tmp_path, "second"))
    assert [e.params["reweight"] for e in library_edits.list_edits(library)] == [{"green": 3.5}, {"green": 2.5}]


def test_the_canvas_divider_follows_the_mouse(scripted, tmp_path):
    page, engine = scripted
    page.show_result(page.job_params(), scripted_result(tmp_path, "cmp"))
    page.view.set_view("compare")
    canvas = page.view.canvas
    rect = canvas.image_rect()
    QTest.mousePress(canvas, Qt.LeftButton, Qt.NoModifier, QPoint(int(rect.left() + rect.width() * 0.25),
                                                                  int(rect.center().y())))
    assert canvas.divider == pytest.approx(0.25, abs=0.02)
    shot = canvas.grab().toImage()
    left = shot.pixelColor(int(rect.left() + rect.width() * 0.2), int(rect.top() + rect.height() * 0.25))
    right = shot.pixelColor(int(rect.left() + rect.width() * 0.3), int(rect.top() + rect.height() * 0.25))
    assert left.red() > left.green() and right.green() > right.red()  # before: red; after: green


# ---------------------------------------------------------------------------------------------
# with the engine and the toy-world model


@pytest.fixture
def engine_page(qtbot, aloop, toy_engine, library):
    page = EditPage(toy_engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.resize(1130, 700)
    page.show()
    assert page.model_info["name"] == "Toy world (demo)"
    yield page
    page.shutdown()
    toy_engine.event.disconnect(page.runner.on_event)


def test_a_real_edit_round_trip_with_heatmaps_and_a_live_reweight(engine_page, run_until, library):
    from engine.toy.evaluator import detect

    page = engine_page
    form = page.form
    form.source_prompt.setText(SOURCE)
    form.target_prompt.setText(TARGET)
    form.seed.setValue(3)
    form.steps.setValue(10)
    page.edit_button.click()
    run_until(lambda: page.result is not None or "failed" in page.status.text(), 120, page.status.text())
    assert page.result is not None, page.status.text()
    assert page.status.text().startswith("Done"), page.status.text()
    original, edited = page.view.pictures["original"], page.view.pictures["edited"]
    assert edited.shape == (64, 64, 3) and page.view.canvas.images["edited"] is not None
    stars = [d for d in detect(edited) if d.shape == "star"]
    assert stars and stars[0].colour == "green", [(d.shape, d.colour) for d in detect(edited)]
    assert any(d.shape == "star" and d.colour == "red" for d in detect(original))

    page.view.pick_words("target", ["star"])
    assert page.view.canvas.view == "heatmap" and page.view.canvas.images["heatmap"] is not None
    heatmaps = page.view.heatmaps
    star_index = [w["word"] for w in heatmaps.words("target")].index("star")
    values, _ = attention_map(heatmaps, HeatmapChoice("target", (star_index,)))
    on_star = upsample(values, (64, 64))
    mask = stars[0].mask
    assert on_star[mask].mean() > 2 * on_star[~mask].mean()  # the heatmap of "star" lies on the star
    assert "CLIP token 3" in page.view.strips["target"].chips[2].word_button.toolTip()
    [first] = library_edits.list_edits(library)

    submitted = page.runner.submissions
    page.view.strips["target"].chips[1].slider.setValue(30)  # "green" ×3, re-rendered live
    run_until(lambda: page.runner.submissions > submitted and not page.runner.busy, 120, page.status.text())
    assert page.result["reused_source"] is True and "source reused" in page.status.text()
    [latest] = library_edits.list_edits(library)  # the re-render replaced the history entry
    assert latest.file != first.file and latest.params["reweight"] == {"green": 3.0}
    assert Path(first.file).is_file()  # each render keeps its own files


def test_a_real_photo_is_inverted_and_its_reconstruction_reported(engine_page, run_until, tmp_path):
    from engine.toy.world import Scene, ToyObject, render

    pixels, _ = render(Scene([ToyObject("circle", "red", 0.5, 0.5, 0.25)], "white"), size=256)
    photo = tmp_path / "photo.png"
    Image.fromarray(pixels).save(photo)
    page = engine_page
    page.open_source(str(photo))
    page.form.source_prompt.setText("a red circle on a white background")
    page.form.target_prompt.setText("a blue circle on a white background")
    page.form.steps.setValue(10)
    page.edit_button.click()
    run_until(lambda: page.result is not None or "failed" in page.status.text(), 120, page.status.text())
    assert page.result is not None, page.status.text()
    assert page.result["reconstruction_psnr"] is not None and "dB PSNR" in page.notes.text()
