"""The real window, offscreen, with a real engine subprocess and a tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from s2s_desktop.main_window import MainWindow
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings


@pytest.fixture
def window(qtbot, aloop, run_until):
    engine = QtEngine()
    win = MainWindow(engine, Settings.load())
    qtbot.addWidget(win)
    win.show()
    run_until(lambda: engine.client.hello is not None, 60, "engine never answered hello")
    yield win
    win.close()


def test_window_opens_with_all_pages(qtbot, aloop):
    win = MainWindow(QtEngine(), Settings.load(), start_engine=False)
    qtbot.addWidget(win)
    win.show()
    titles = [win.nav.item(i).text() for i in range(win.nav.count())]
    assert titles == ["Library", "Train", "Generate", "Edit", "Evaluate"]
    assert win.stack.currentWidget() is win.generate_page
    assert "Toy world (demo)" in win.generate_page.model_label.text()  # the first-run model
    win.show_page("edit")
    assert win.stack.currentWidget() is win.edit_page
    assert win.edit_page.edit_button.text() == "Edit" and win.edit_page.view.canvas.isVisible()
    win.show_page("evaluate")
    assert win.stack.currentWidget() is win.evaluate_page
    assert win.evaluate_page.evaluate_button.text() == "Evaluate"


def test_generate_puts_image_in_grid(window, run_until, tiny_model_dir, isolated_home):
    page = window.generate_page
    window.show_models()
    dialog = window.models_dialog
    dialog.add_source(str(tiny_model_dir), name="tiny")
    run_until(lambda: (page._model_info or {}).get("name") == "tiny", 120, "model never loaded")
    assert page.width_box.value() == 64
    assert Settings.load().active_model == "tiny"
    dialog.close()

    page.prompt.setPlainText("a red star on a blue background")
    page.seed.setValue(3)
    page.steps.setValue(5)
    page.batch.setValue(2)
    before = page.results.count()
    page.generate_button.click()
    run_until(lambda: page.results.count() == before + 2 and page.generate_button.isEnabled(), 120, page.status.text())
    assert page.progress.value() == 5
    assert page.status.text().startswith("Done")
    item = page.results.item(0)
    path = Path(item.data(Qt.UserRole))
    assert path.is_file() and path.is_relative_to(isolated_home / "outputs")
    assert "Seed: 4" in item.data(Qt.UserRole + 1) or "Seed: 3" in item.data(Qt.UserRole + 1)
    # the jobs dock saw the job finish
    states = [window.jobs_dock.tree.topLevelItem(i).text(2) for i in range(window.jobs_dock.tree.topLevelItemCount())]
    assert "finished" in states
    # clicking a result opens the full-size viewer with its parameters
    viewer = page.show_item(item)
    assert viewer.isVisible() and "Sampler: DDIM" in viewer.text.toPlainText()
    assert viewer.original_size.width() == 64 and viewer.image_label.pixmap().width() >= 384
    viewer.close()
    # the engine's log reached the log dock
    run_until(lambda: "loaded" in window.log_dock.text(), 10)


def test_pickle_checkpoint_is_refused_with_the_message_shown(window, run_until, tmp_path):
    ckpt = tmp_path / "downloaded-model.ckpt"
    ckpt.write_bytes(b"\x80\x04 pretend pickle")
    window.show_models()
    dialog = window.models_dialog
    assert not dialog.allow_pickle.isChecked()
    dialog.add_source(str(ckpt))
    run_until(lambda: "Could not add" in dialog.message.text(), 30)
    text = dialog.message.text()
    assert "pickle" in text and "arbitrary code" in text and "What to do" in text
    assert all(not m.source.endswith(".ckpt") for m in Settings.load().models)  # not added


def test_cancel_from_the_generate_page(window, run_until, tiny_model_dir):
    page = window.generate_page
    window.show_models()
    window.models_dialog.add_source(str(tiny_model_dir), name="tiny")
    run_until(lambda: (page._model_info or {}).get("name") == "tiny", 120)
    page.prompt.setPlainText("slow one")
    page.steps.setValue(400)
    page.width_box.setValue(256)
    page.height_box.setValue(256)
    page.generate_button.click()
    run_until(lambda: page.progress.value() >= 1, 60)
    page.cancel_button.click()
    run_until(lambda: page.status.text() == "Cancelled.", 60)
    assert page.generate_button.isEnabled()


def test_gui_imports_no_torch():
    """Build the whole window in a fresh interpreter and check torch & co never got imported."""
    code = (
        "import os, sys\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from s2s_desktop.app import create_app, build_window\n"
        "app = create_app()\n"
        "import asyncio, qasync\n"
        "asyncio.set_event_loop(qasync.QEventLoop(app))\n"
        "w = build_window(start_engine=False); w.show(); app.processEvents()\n"
        "w.show_models(); app.processEvents()\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout


def test_first_run_generates_with_the_toy_world(window, run_until):
    """A new user: the demo model loads by itself and draws what the prompt says."""
    import numpy as np
    from PIL import Image

    from engine.toy.scoring import score_caption

    page = window.generate_page
    run_until(lambda: (page._model_info or {}).get("name") == "Toy world (demo)", 120, "demo model never loaded")
    assert "Toy world (demo)" in page.model_label.text()
    page.prompt.setPlainText("a yellow circle on a gray background")
    page.seed.setValue(5)
    page.generate_button.click()
    run_until(lambda: page.results.count() == 1 and page.generate_button.isEnabled(), 120, page.status.text())
    path = page.results.item(0).data(Qt.UserRole)
    verdict = score_caption(np.asarray(Image.open(path).convert("RGB")), "a yellow circle on a gray background")
    assert verdict["colour_ok"] and verdict["background_ok"], verdict


def test_a_library_from_a_newer_app_disables_library_and_training_only(qtbot, aloop, isolated_home):
    import sqlite3

    conn = sqlite3.connect(isolated_home / "library.sqlite3")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    win = MainWindow(QtEngine(), Settings.load(), start_engine=False)
    qtbot.addWidget(win)
    win.show_page("library")
    texts = " ".join(label.text() for label in win.stack.currentWidget().findChildren(QLabel))
    assert "unavailable" in texts and "newer Subject2Subject" in texts
    assert win.generate_page is not None and win.library_page is None
    win.close()
