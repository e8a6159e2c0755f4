"""The GUI process killed (SIGKILL) during an import, a training run and an export; the next start
recovers: leftovers removed, the run shown as interrupted and resumable, nothing half-written under
a final name, and the library passes ``consistency.problems``.

Each GUI is a real offscreen app in a child process (the Library page's import worker, the Train
page with its own engine, the report export), so the kill takes its threads and pipes with it."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2s_desktop.library import Library, consistency
from s2s_desktop.library import runs as library_runs

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

ROOT = Path(__file__).resolve().parents[2]

GUI_IMPORT = """
import sys, time
from pathlib import Path
from PySide6.QtWidgets import QApplication
from s2s_desktop.library import Library
from s2s_desktop.pages.library import LibraryPage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
app = QApplication([])
library = Library()
subject = library.create_subject("Biscuit", "dog")
page = LibraryPage(QtEngine(), Settings.load(), library)
page.import_paths(subject.id, [Path(sys.argv[1])])
while True:  # the Qt loop, until the parent kills this process
    app.processEvents()
    time.sleep(0.005)
"""

GUI_TRAIN = """
import asyncio, sys
import qasync
from PySide6.QtWidgets import QApplication
from s2s_desktop.demo import demo_entry
from s2s_desktop.library import Library
from s2s_desktop.pages.train import TrainPage
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from tests.gui.test_train_page import ONE_PROMPT, type_settings
app = QApplication([])
loop = qasync.QEventLoop(app)
asyncio.set_event_loop(loop)
engine = QtEngine()
engine.client.start()
engine.client.load_model(demo_entry().load_params("cpu")).result(timeout=300)
library = Library()
page = TrainPage(engine, Settings.load(), library)
page.set_model_info(engine.client.loaded_model)
type_settings(page, steps=40, batch=1, prior=False, sample_every=0, checkpoint_every=2, **ONE_PROMPT)
print("engine", engine.client.pid, flush=True)
page.train_button.click()
with loop:
    loop.run_forever()
"""

GUI_EXPORT = """
import sys
from pathlib import Path
from s2s_desktop import reports
while True:  # export the report again and again, until the parent kills this process
    reports.html_report(Path(sys.argv[1]), None, Path(sys.argv[2]), title="Dotty")
    print("exported", flush=True)
"""


def spawn(script: str, home: Path, *args) -> subprocess.Popen:
    env = dict(os.environ, S2S_HOME=str(home), QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def catalog_value(db: Path, sql: str, default=0):
    """Read the catalog the way a second process would while the GUI writes it."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(sql).fetchone()
            return row[0] if row and row[0] is not None else default
        finally:
            conn.close()
    except sqlite3.Error:
        return default


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process is None or process.poll() is None, f"the GUI exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


@pytest.mark.parametrize("rows_before_kill", [3, 11])
def test_gui_killed_during_an_import(tmp_path, rows_before_kill, faults):
    home, photos = tmp_path / "home", tmp_path / "photos"
    photos.mkdir()
    for i in range(30):
        pixels = np.random.default_rng(i).integers(0, 256, (700, 900, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i:02d}.png")
    gui = spawn(GUI_IMPORT, home, photos)
    db = home / "library.sqlite3"
    wait_for(lambda: catalog_value(db, "SELECT COUNT(*) FROM images") >= rows_before_kill, 120,
             f"{rows_before_kill} imported photos", gui)
    kill(gui)
    imported = catalog_value(db, "SELECT COUNT(*) FROM images")

    library = Library(home)  # the next start
    recovered = consistency.recover(library)
    assert consistency.problems(library) == []
    records = library.images(library.subjects()[0].id)
    assert len(records) == imported >= rows_before_kill  # every photo the catalog had is still there
    assert all(r.path.is_file() for r in records)
    faults.record("GUI killed", "SIGKILL during a 30-photo import (Library page worker)",
                  note=f"after {imported} photos; next start removed {len(recovered['removed'])} leftover files")


def test_gui_killed_during_training_then_resumed(tmp_path, qtbot, aloop, run_until, faults, monkeypatch):
    from engine.train import checkpoint
    from s2s_desktop.pages.train import TrainPage
    from s2s_desktop.pages.train_runs import run_status_text
    from s2s_desktop.qt_engine import QtEngine
    from s2s_desktop.settings import Settings
    from tests.gui.test_train_page import make_subject

    home = tmp_path / "home"
    library = Library(home)
    subject = make_subject(library, tmp_path)
    gui = spawn(GUI_TRAIN, home)
    engine_pid = int(gui.stdout.readline().split()[1])
    db = home / "library.sqlite3"
    wait_for(lambda: catalog_value(db, "SELECT MAX(step) FROM runs") >= 6, 300, "6 training steps", gui)
    kill(gui)
    # the engine sees its stdin close and stops by itself: no orphan process holding the run
    wait_for(lambda: not alive(engine_pid), 60, "the engine to exit after the GUI died")

    monkeypatch.setenv("S2S_HOME", str(home))  # the next start, in this process
    library = Library(home)
    consistency.recover(library)
    assert consistency.problems(library) == []
    (run,) = library_runs.runs_of(library, subject.id)
    assert run.status == "running" and run.resumable  # what the app finds: interrupted, progress kept
    assert run_status_text(run, None) == "interrupted — progress kept"
    latest = checkpoint.latest(run.folder)
    assert latest is not None and int(latest.name.split("-")[1]) >= run.step >= 6  # the catalog's step is kept

    engine = QtEngine()
    try:
        from s2s_desktop.demo import demo_entry

        engine.client.start()
        engine.client.load_model(demo_entry().load_params("cpu")).result(timeout=300)
        page = TrainPage(engine, Settings.load(), library)
        qtbot.addWidget(page)
        page.set_model_info(engine.client.loaded_model)
        page.run_list.setCurrentRow(0)
        run_until(lambda: page.resume_button.isEnabled(), 30, "Resume is not offered")
        page.resume_button.click()
        run_until(lambda: library_runs.get_run(library, run.id).status in ("finished", "failed"), 240,
                  page.status.text())
        done = library_runs.get_run(library, run.id)
        assert done.status == "finished" and done.result["step"] == 40, done.error
        page.shutdown()
    finally:
        engine.close()
    assert consistency.problems(library) == []
    faults.record("GUI killed", "SIGKILL during a toy LoRA run (Train page + its engine), then Resume",
                  note=f"engine exited by itself; resumed from {latest.name} to step {done.result['step']}")


def test_gui_killed_during_an_export(tmp_path, faults):
    folder, out = tmp_path / "gallery", tmp_path / "exports" / "report.html"
    folder.mkdir()
    images = []
    for i in range(40):
        pixels = np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        images.append({"column": "base", "row": i % 4, "seed": i // 4, "prompt": f"p{i % 4}", "file": f"{i}.png"})
    (folder / "gallery.json").write_text(json.dumps({
        "version": 1, "complete": True, "prompts": ["p0", "p1", "p2", "p3"], "seeds": list(range(10)),
        "columns": [{"key": "base", "label": "Base"}], "images": images, "settings": {}, "token": "", "class_noun": "",
        "prior_prompt": ""}))
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        gui = spawn(GUI_EXPORT, tmp_path / "home", folder, out)
        assert gui.stdout.readline().strip() == "exported"  # one whole report is on disk
        started = time.monotonic()
        assert gui.stdout.readline().strip() == "exported"
        one_export = time.monotonic() - started
        time.sleep(rng.uniform(0.0, one_export))  # somewhere inside the next write
        kill(gui)
        kills += 1
        text = out.read_text(encoding="utf-8")  # the old report or the new one, never half of one
        assert text.rstrip().endswith("</html>") and text.count("<img") == 40
    faults.record("GUI killed", "SIGKILL while exporting an HTML report over the last one", tried=kills,
                  survived=kills, note="the final name always holds a whole report")
