"""The Evaluate page offscreen: the scores table from a hand-written evaluation (values, sample counts,
warnings, "not available" with its reason, the recommended column, sorting), the page around a stored
gallery and its scores, the feature-models settings, exports, and a real ``evaluate`` job on the
toy-world engine once engine/evaluate.py exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from engine.protocol.gallery import MANIFEST_NAME, METRICS, image_file
from s2s_desktop.demo import toy_model_path
from s2s_desktop.library import ImportLimits, Library, galleries, import_files
from s2s_desktop.pages.evaluate import EvaluatePage, FeatureModelsDialog
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from s2s_desktop.widgets.evaluation_table import UNAVAILABLE, EvaluationTable, notes_text

REPO = Path(__file__).resolve().parents[2]
TOY_INFO = {"name": "Toy world (demo)", "device": "cpu", "native_resolution": 64, "location": "/x/toy-world"}
SHOWN = ("clip_t", "dino", "fid", "toy_subject")


def evaluation(folder: str = "/g") -> dict:
    def value(v, n=4, warning=None):
        return {"value": v, "n": n, **({"warning": warning} if warning else {})}

    no_dino = {"value": None, "unavailable": "no DINO model: set one in Feature models…"}
    few = "4 images: FID needs at least 50 to mean much"
    return {
        "version": 1, "gallery": folder,
        "metrics": [{"name": n, **METRICS[n]} for n in SHOWN],
        "rows": [
            {"column": "base", "label": "Base model", "scores": {
                "clip_t": value(21.5), "dino": no_dino, "fid": value(310.25, warning=few), "toy_subject": value(0.0)}},
            {"column": "run1", "label": "#1 DreamBooth-LoRA", "scores": {
                "clip_t": value(27.25), "dino": no_dino, "fid": value(180.5, warning=few), "toy_subject": value(0.75)}},
            {"column": "run2", "label": "#2 Textual Inversion", "scores": {
                "clip_t": value(24.0), "dino": no_dino, "fid": {"value": None, "unavailable": "only 1 image"},
                "toy_subject": value(0.5, n=2)}},
        ],
        "best": {"column": "run1", "label": "#1 DreamBooth-LoRA", "by": ["toy_subject", "clip_t"],
                 "reason": "the best subject score while it still follows the prompts"},
    }


def click_header(qtbot, table: EvaluationTable, column: int) -> None:
    header = table.horizontalHeader()
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.LeftButton, pos=QPoint(x, header.height() // 2))


def test_the_table_shows_scores_reasons_and_the_recommendation(qtbot):
    table = EvaluationTable()
    qtbot.addWidget(table)
    table.resize(800, 300)
    table.show()
    table.set_evaluation(evaluation())
    assert table.rowCount() == 3 and table.columnCount() == 1 + len(SHOWN)
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    # the metrics with scores first, then DINO (not available for any column)
    assert headers == ["Run", "CLIP-T ↑", "FID ↓", "Subject (toy) ↑", "DINO ↑"]
    assert "lower is better" in table.horizontalHeaderItem(2).toolTip()
    assert table.column_order() == ["base", "run1", "run2"]  # the gallery's order until a header is clicked

    clip = table.cell("run1", "clip_t")
    assert clip.text() == "27.25" and "from 4 images" in clip.toolTip() and clip.font().bold()  # best CLIP-T
    assert not table.cell("base", "clip_t").font().bold()
    fid = table.cell("base", "fid")
    assert fid.text() == "310.2 ⚠" and "FID needs at least 50" in fid.toolTip()
    assert table.cell("run1", "fid").font().bold()  # lower is better
    dino = table.cell("run2", "dino")
    assert dino.text() == UNAVAILABLE and "no DINO model" in dino.toolTip()
    assert table.cell("run2", "toy_subject").data(Qt.UserRole) == 2  # its own sample count

    best = table.item(table.row_of("run1"), 0)
    assert best.text() == "★ #1 DreamBooth-LoRA" and "follows the prompts" in best.toolTip()
    assert best.background().color().alpha() > 0 and table.item(table.row_of("base"), 0).background().style() == Qt.NoBrush

    notes = notes_text(evaluation())
    assert "<b>DINO</b> not available: no DINO model" in notes and "FID" in notes and "hover" in notes
    assert "FID: only 1 image" not in notes  # a single missing cell is explained in its tooltip


def test_sorting_by_a_metric_keeps_unavailable_cells_last(qtbot):
    table = EvaluationTable()
    qtbot.addWidget(table)
    table.resize(800, 300)
    table.show()
    table.set_evaluation(evaluation())
    fid = table.column_of("fid")
    click_header(qtbot, table, fid)
    header = table.horizontalHeader()
    assert header.sortIndicatorSection() == fid
    ascending = header.sortIndicatorOrder() == Qt.AscendingOrder
    assert table.column_order() == (["run1", "base", "run2"] if ascending else ["base", "run1", "run2"])
    click_header(qtbot, table, fid)  # the other way round: the missing FID stays at the bottom
    assert table.column_order() == (["base", "run1", "run2"] if ascending else ["run1", "base", "run2"])
    table.sortItems(table.column_of("clip_t"), Qt.DescendingOrder)
    assert table.column_order() == ["run1", "run2", "base"]
    table.sortItems(0, Qt.AscendingOrder)  # by label
    assert table.column_order() == ["run1", "run2", "base"]
    table.set_evaluation(None)
    assert table.rowCount() == 0


# ---------------------------------------------------------------------------------------------
# the page around stored galleries


def make_subject(library: Library, folder: Path, name: str = "Dotty", noun: str = "star"):
    subject = library.create_subject(name, noun)
    paths = []
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        paths.append(folder / f"{name}-{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    import_files(library, subject, paths, ImportLimits())
    return library.subject(subject.id)


def make_gallery(library: Library, subject, columns=("base", "run1", "run2"), seeds=(0, 1)) -> galleries.Gallery:
    """A gallery folder as the engine writes one (PNGs + gallery.json), recorded in the library."""
    folder = galleries.new_gallery_folder(library, subject, library.home / "outputs")
    prompts = ["a photo of {token} {class}", "a photo of {token} {class} on a blue background"]
    images = []
    for c, key in enumerate(columns):
        for row, template in enumerate(prompts):
            for seed in seeds:
                relative = image_file(key, row, seed)
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                colour = (40 + 80 * c, 120, 200 - 60 * row + seed)
                Image.new("RGB", (64, 64), colour).save(folder / relative)
                prompt = template.replace("{token}", subject.token).replace("{class}", subject.class_noun)
                images.append({"column": key, "row": row, "seed": seed, "prompt": prompt, "kind": "subject",
                               "file": relative})
    manifest = {
        "version": 1, "complete": True, "token": subject.token, "class_noun": subject.class_noun,
        "prompts": prompts, "seeds": list(seeds), "prior_prompt": "",
        "columns": [{"key": key, "label": key, "adapter": None} for key in columns],
        "settings": {"steps": 4, "guidance": 7.5, "negative_prompt": "", "scheduler": "ddim", "width": 64,
                     "height": 64, "model": "Toy world (demo)"},
        "images": images,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    return galleries.record_gallery(library, subject.id, {"out_dir": str(folder)})


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


def test_picking_a_gallery_shows_its_stored_scores(page, library, tmp_path):
    dotty = make_subject(library, tmp_path)
    mug = make_subject(library, tmp_path, "Mug", "mug")
    scored = make_gallery(library, dotty)
    galleries.record_evaluation(library, scored.id, evaluation(str(scored.folder)))
    unscored = make_gallery(library, dotty, columns=("base",))
    page.refresh()
    assert page.subject.currentData() == dotty.id and page.gallery_box.count() == 2

    assert page.select_gallery(unscored.id)
    assert not page.table.isVisible() and "Not scored yet" in page.empty.text()
    assert page.gallery_info.text().startswith("4 images: 2 prompts × 2 seeds")
    assert not page.export_buttons["csv"].isEnabled() and page.export_buttons["grid"].isEnabled()

    assert page.select_gallery(scored.id)
    assert page.table.isVisible() and page.table.rowCount() == 3
    assert page.table.cell("run1", "clip_t").text() == "27.25"
    assert page.best.isVisible() and "Recommended: <b>#1 DreamBooth-LoRA</b>" in page.best.text()
    assert "<b>DINO</b> not available" in page.notes.text()
    assert "12 images" in page.gallery_info.text() and "Columns: base, run1, run2" in page.gallery_info.text()
    assert "the 2 photos of <b>Dotty</b>" in page.real_info.text() and "Toy scores: on" in page.real_info.text()

    page.settings.feature_models.dino = "/models/dino-vits16"
    params, problem = page.params()
    assert problem == ""
    assert params["gallery"] == str(scored.folder) and params["toy_subject"] == "Dotty"
    assert params["real_images"] == [str(r.path) for r in library.images(dotty.id)]
    toy_clip = galleries.feature_sources_for({}, str(toy_model_path())).get("clip")  # the shipped toy CLIP
    assert params["feature_models"] == {"dino": "/models/dino-vits16", **({"clip": toy_clip} if toy_clip else {})}
    assert ("CLIP: toy-world CLIP" in page.features_label.text()) == bool(toy_clip)
    assert set(params["metrics"]) == set(METRICS)

    page.subject.setCurrentIndex(page.subject.findData(mug.id))  # not a toy subject, no galleries
    assert page.gallery is None and page.gallery_box.count() == 0 and not page.evaluate_button.isEnabled()
    assert not page.metric_boxes["toy_match"].isEnabled() and page.toy_subject() == ""


def test_feature_models_are_edited_in_settings(page, qtbot):
    dialog = page.edit_feature_models()
    assert set(dialog.fields) == {"clip", "dino", "inception", "lpips"}
    assert "openai/clip-vit-base-patch32" in dialog.fields["clip"].placeholderText()
    dialog.fields["clip"].setText("  /models/clip-l14 ")
    dialog.fields["lpips"].setText("/models/lpips-alex.pth")
    dialog.accept()
    saved = Settings.load().feature_models
    assert (saved.clip, saved.lpips, saved.dino) == ("/models/clip-l14", "/models/lpips-alex.pth", "")
    assert saved.sources() == {"clip": "/models/clip-l14", "lpips": "/models/lpips-alex.pth"}
    assert "CLIP: clip-l14" in page.features_label.text() and "DINO: default" in page.features_label.text()
    again = FeatureModelsDialog(page.settings)
    qtbot.addWidget(again)
    assert again.fields["clip"].text() == "/models/clip-l14"


def test_exports_write_the_files(page, library, tmp_path):
    pytest.importorskip("s2s_desktop.reports", reason="s2s_desktop/reports.py has not landed yet")
    dotty = make_subject(library, tmp_path)
    gallery = make_gallery(library, dotty)
    galleries.record_evaluation(library, gallery.id, evaluation(str(gallery.folder)))
    page.refresh()
    assert page.select_gallery(gallery.id)
    out = tmp_path / "exports"
    out.mkdir()
    for kind, name in (("csv", "scores.csv"), ("markdown", "scores.md"), ("html", "report.html"),
                       ("grid", "grid.png")):
        written = page.export(kind, out / name)
        assert written is not None and written.is_file() and written.stat().st_size > 0, page.status.text()
    assert "27.25" in (out / "scores.csv").read_text(encoding="utf-8")
    assert "DreamBooth-LoRA" in (out / "scores.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# a real evaluate job


@pytest.mark.skipif(not (REPO / "engine" / "evaluate.py").is_file(), reason="engine/evaluate.py has not landed yet")
def test_a_real_evaluation_fills_the_table_and_the_library(qtbot, aloop, run_until, toy_engine, library, tmp_path):
    dotty = make_subject(library, tmp_path)
    gallery = make_gallery(library, dotty, columns=("base", "run1"), seeds=(0,))
    page = EvaluatePage(toy_engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.show()
    try:
        assert page.select_gallery(gallery.id)
        for name, box in page.metric_boxes.items():
            box.setChecked(name in ("toy_subject", "toy_prompt", "clip_t"))
        page.evaluate_button.click()
        run_until(lambda: page.current_job is None and ("Scored" in page.status.text()
                                                        or "failed" in page.status.text()), 240, page.status.text())
        assert page.status.text().startswith("Scored 2 columns"), page.status.text()
        stored = galleries.evaluation_of(library, gallery.id)
        assert [row["column"] for row in stored["rows"]] == ["base", "run1"]
        assert page.table.rowCount() == 2 and page.table.column_order() == ["base", "run1"]
        toy = page.table.cell("base", "toy_subject")
        assert toy.text() != UNAVAILABLE and "from 2 images" in toy.toolTip()
        clip = page.table.cell("run1", "clip_t")  # offline, without a CLIP model: a reason, or a score
        assert clip.toolTip() and (clip.text() != UNAVAILABLE or "not available" in clip.toolTip())
        assert (gallery.folder / "evaluation.json").is_file()
        assert "· scored" in page.gallery_box.currentText()
    finally:
        if page.current_job:
            toy_engine.cancel(page.current_job)
        toy_engine.event.disconnect(page.on_event)
        toy_engine.state_changed.disconnect(page._on_engine_state)
