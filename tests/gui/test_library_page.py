"""The Library page, offscreen: real drops, real mouse drags in the crop editor, real dialogs answered
by patched static methods, and the demo subjects rendered by a real engine subprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QDialog, QInputDialog, QMessageBox

from s2s_desktop.library import Crop, Library
from s2s_desktop.library.demo_subjects import demo_render_dir
from s2s_desktop.pages.library import LibraryPage
from s2s_desktop.pages.library_workers import thumbnail_key
from s2s_desktop.pages.subject_view import KEY_ROLE
from s2s_desktop.qt_engine import QtEngine
from s2s_desktop.settings import Settings
from s2s_desktop.widgets.subject_dialog import NewSubjectDialog


def make_photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """Noise with a coloured block: every seed looks different (no near-duplicate warnings)."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def library(isolated_home) -> Library:
    return Library(isolated_home)


@pytest.fixture
def page(qtbot, library):
    page = LibraryPage(QtEngine(), Settings.load(), library)  # an engine that is never started
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    qtbot.waitExposed(page)
    yield page
    page.shutdown()


def drop_files(target, paths, at: QPoint | None = None) -> None:
    """What the window system delivers when files are dragged onto ``target`` and let go."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    point = at if at is not None else target.rect().center()
    centre = QPointF(point)
    enter = QDragEnterEvent(point, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)  # QPoint in Qt 6.11
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    drop = QDropEvent(centre, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(target, drop)
    assert drop.isAccepted()


def import_and_wait(qtbot, page, subject_id: int, paths) -> None:
    page.import_paths(subject_id, paths)
    qtbot.waitUntil(lambda: not page.workers.batches, timeout=20000)


def test_dropped_files_are_imported_and_refusals_explained(page, library, tmp_path, qtbot):
    subject = library.create_subject("Biscuit", "dog")
    page.refresh_subjects(select_id=subject.id)
    good = [
        make_photo(tmp_path / "beach.png", (320, 256), 1),
        make_photo(tmp_path / "sofa.jpg", (256, 384), 2),
        make_photo(tmp_path / "park.png", (400, 400), 3),
    ]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a photo", encoding="utf-8")
    make_photo(tmp_path / "tiny.png", (100, 100), 4)
    files = good + [tmp_path / "empty.jpg", tmp_path / "notes.txt", tmp_path / "tiny.png"]

    drop_files(page.view.grid.viewport(), files)
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Biscuit: 3 added"), timeout=20000)

    grid = page.view.grid
    assert grid.count() == 3
    assert sorted(grid.item(i).text() for i in range(3)) == ["beach.png", "park.png", "sofa.jpg"]
    assert len(library.images(subject.id)) == 3
    lines = page.view.results_panel.lines()
    assert lines[0].startswith("Biscuit") and "3 added, 3 refused" in lines[0]
    refused = {line.split(" — ")[0]: line for line in lines if line.startswith("✗")}
    assert set(refused) == {"✗ empty.jpg", "✗ notes.txt", "✗ tiny.png"}
    assert "empty (0 bytes)" in refused["✗ empty.jpg"]
    assert "not an image" in refused["✗ notes.txt"]
    assert "too small: 100×100 px" in refused["✗ tiny.png"]
    assert sum(line.startswith("✓") for line in lines) == 3
    # the subject-level warning (fewer than 4 photos) is in the header and the results
    assert page.view.warnings_label.isVisible() and "Only 3 photos" in page.view.warnings_label.text()
    assert any(line.startswith("⚠ Only 3 photos") for line in lines)
    assert "3 photos" in page.view.details_label.text()
    assert page.subject_list.currentItem().text().startswith("Biscuit\n3 photos")
    # thumbnails arrive from the worker threads
    placeholder = page.workers.placeholder.cacheKey()
    qtbot.waitUntil(lambda: all(grid.item(i).icon().cacheKey() != placeholder for i in range(3)), timeout=10000)
    assert "320 × 256 px" in grid.item(0).toolTip() or "320 × 256 px" in grid.item(1).toolTip()
    assert not page.progress.isVisible()

    # dropping the same photo again: reported as a duplicate, nothing added
    drop_files(page.view.grid.viewport(), [good[0]])
    qtbot.waitUntil(lambda: "1 duplicate" in page.status_label.text(), timeout=20000)
    assert grid.count() == 3 and any(line.startswith("= beach.png") for line in page.view.results_panel.lines())


def test_drop_with_no_subject_asks_for_one_first(page, library, tmp_path, qtbot, monkeypatch):
    assert page.views.currentWidget() is page.empty_view

    def fill_in(dialog: NewSubjectDialog) -> int:
        dialog.name_edit.setText("Biscuit")
        dialog.noun_edit.setText("dog")
        assert dialog.token_edit.text() == "<sks-dog>"
        dialog.accept()
        return dialog.result()

    monkeypatch.setattr(NewSubjectDialog, "exec", fill_in)
    drop_files(page, [make_photo(tmp_path / "one.png", (300, 300), 7)])
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Biscuit: 1 added"), timeout=20000)
    assert page.views.currentWidget() is page.main_view
    assert library.subject("Biscuit").token == "<sks-dog>" and page.view.grid.count() == 1


def test_folder_dropped_on_a_subject_row_goes_to_that_subject(page, library, tmp_path, qtbot):
    biscuit = library.create_subject("Biscuit", "dog")
    rex = library.create_subject("Rex", "dog")
    page.refresh_subjects(select_id=biscuit.id)
    folder = tmp_path / "rex photos"
    folder.mkdir()
    for i in range(2):
        make_photo(folder / f"rex-{i}.jpg", (300, 260), 10 + i)
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden files in a folder are skipped
    rex_row = page.subject_list.visualItemRect(page.subject_list.item(1)).center()
    drop_files(page.subject_list.viewport(), [folder], at=rex_row)
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Rex: 2 added"), timeout=20000)
    assert len(library.images(rex.id)) == 2 and library.images(biscuit.id) == []
    assert page.subject_list.item(1).text().startswith("Rex\n2 photos")
    assert page.view.name_label.text() == "Biscuit" and page.view.grid.count() == 0  # still showing Biscuit


def test_remove_photo_keeps_the_original(page, library, tmp_path, qtbot, monkeypatch):
    subject = library.create_subject("Biscuit", "dog")
    page.refresh_subjects(select_id=subject.id)
    originals = [make_photo(tmp_path / f"{i}.png", (300, 300), 20 + i) for i in range(2)]
    import_and_wait(qtbot, page, subject.id, originals)
    assert not page.view.remove_photo_button.isEnabled()
    page.view.grid.item(0).setSelected(True)
    assert page.view.remove_photo_button.isEnabled() and page.view.crop_button.isEnabled()
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda p, t, text, *a: asked.append(text) or QMessageBox.Yes))
    page.view.remove_photo_button.click()
    assert "Remove 1 photo from Biscuit" in asked[0]
    assert page.view.grid.count() == 1 and len(library.images(subject.id)) == 1
    assert "1 photo" in page.view.details_label.text() and "Only 1 photo" in page.view.warnings_label.text()
    assert all(p.is_file() for p in originals)


def test_new_subject_dialog_suggests_tokens_and_shows_errors_inline(qtbot, library):
    library.create_subject("Biscuit", "dog")
    dialog = NewSubjectDialog(library, {"<zwx-cat>"})
    qtbot.addWidget(dialog)
    dialog.noun_edit.setText("dog")
    assert dialog.token_edit.text() == "<zwx-dog>"  # <sks-dog> is Biscuit's
    dialog.noun_edit.setText("cat")
    assert dialog.token_edit.text() == "<sks-cat>"
    dialog.name_edit.setText("biscuit")
    dialog.accept()
    assert dialog.result() != QDialog.Accepted and dialog.error.isVisibleTo(dialog)
    assert "already exists" in dialog.error.text()
    dialog.name_edit.setText("Tom")
    dialog.token_edit.clear()
    qtbot.keyClicks(dialog.token_edit, "<zwx-cat>")  # typed: the noun no longer replaces it
    dialog.noun_edit.setText("kitten")
    assert dialog.token_edit.text() == "<zwx-cat>"
    dialog.accept()
    assert "already a word the model knows" in dialog.error.text()
    dialog.token_edit.setText("<tom-cat>")
    dialog.accept()
    assert dialog.result() == QDialog.Accepted and library.subject("Tom").token == "<tom-cat>"


def test_crop_editor_moves_resizes_and_resets(page, library, tmp_path, qtbot):
    subject = library.create_subject("Biscuit", "dog")
    page.refresh_subjects(select_id=subject.id)
    import_and_wait(qtbot, page, subject.id, [make_photo(tmp_path / "wide.png", (600, 400), 5)])
    item = page.view.grid.item(0)
    before = library.image(item.data(Qt.UserRole))
    editor = page.view.open_crop_editor(item)
    qtbot.waitExposed(editor)
    canvas = editor.canvas
    scale = canvas.scale()
    assert editor.crop() == Crop.centre(600, 400) == Crop(100, 0, 400)

    # drag the bottom-right corner up-left: smaller, top-left corner fixed, still square
    corner = canvas.crop_rect().bottomRight().toPoint() - QPoint(3, 3)  # just inside the canvas
    qtbot.mousePress(canvas, Qt.LeftButton, pos=corner)
    qtbot.mouseMove(canvas, corner - QPoint(120, 60))
    qtbot.mouseRelease(canvas, Qt.LeftButton, pos=corner - QPoint(120, 60))
    resized = editor.crop()
    assert (resized.x, resized.y) == (100, 0)
    assert abs(resized.size - (400 - 60 / scale)) <= 4  # the farther axis (the smaller shrink) wins

    # drag from inside the box: it moves by the same distance in image pixels
    start = canvas.crop_rect().center().toPoint()
    qtbot.mousePress(canvas, Qt.LeftButton, pos=start)
    qtbot.mouseMove(canvas, start + QPoint(40, 30))
    qtbot.mouseRelease(canvas, Qt.LeftButton, pos=start + QPoint(40, 30))
    moved = editor.crop()
    assert moved.size == resized.size
    assert abs(moved.x - (100 + 40 / scale)) <= 2 and abs(moved.y - 30 / scale) <= 2

    # dragged far past the edge, the box stops at it
    start = canvas.crop_rect().center().toPoint()
    qtbot.mousePress(canvas, Qt.LeftButton, pos=start)
    qtbot.mouseMove(canvas, QPoint(canvas.width() - 1, canvas.height() - 1))
    qtbot.mouseRelease(canvas, Qt.LeftButton, pos=QPoint(canvas.width() - 1, canvas.height() - 1))
    edge = editor.crop()
    assert edge.x + edge.size == 600 and edge.y + edge.size == 400

    # the wheel resizes around the centre; the programmatic setter clamps into the image
    editor.set_crop(Crop(500, 300, 1000))
    assert editor.crop() == Crop(200, 0, 400)
    editor.set_crop(Crop(150, 50, 300))
    editor.save_button.click()
    stored = library.image(before.id)
    assert stored.crop == Crop(150, 50, 300) == editor.crop()
    assert library.thumbnail(stored, 192) != library.thumbnail(before, 192)
    # the grid shows the new crop's thumbnail
    placeholder = page.workers.placeholder.cacheKey()
    qtbot.waitUntil(
        lambda: item.data(KEY_ROLE) == thumbnail_key(stored) and item.icon().cacheKey() != placeholder, timeout=10000
    )
    assert "300 px square at (150, 50)" in item.toolTip()

    again = page.view.open_crop_editor(item)
    assert again.crop() == Crop(150, 50, 300)
    again.reset_button.click()
    assert again.crop() == Crop.centre(600, 400)
    again.cancel_button.click()
    assert library.image(before.id).crop == Crop(150, 50, 300)  # Cancel saves nothing


def test_rename_token_and_delete_with_confirmation(page, library, tmp_path, qtbot, monkeypatch):
    library.create_subject("Rex", "dog")
    subject = library.create_subject("Biscuit", "dog")
    page.refresh_subjects(select_id=subject.id)
    import_and_wait(qtbot, page, subject.id, [make_photo(tmp_path / f"{i}.png", (300, 300), i) for i in range(2)])
    folder = library.subject_folder(subject)
    assert folder.is_dir() and len(list((folder / "images").iterdir())) == 2

    prompts: list[str] = []
    answers = iter([("rex", True), ("Biscuit the Second", True)])  # a clash first, then a good name

    def get_text(parent, title, label, echo, text):
        prompts.append(label)
        return next(answers)

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    page.view.rename_button.click()
    assert "already exists" in prompts[1]  # the reason is shown above the field when it asks again
    assert library.subject(subject.id).name == "Biscuit the Second"
    assert page.view.name_label.text() == "Biscuit the Second"
    assert page.subject_list.currentItem().text().startswith("Biscuit the Second")

    answers = iter([("two words", True), ("<biscuit-dog>", True)])
    prompts.clear()
    page.view.token_button.click()
    assert "not a valid identifier token" in prompts[1]
    assert library.subject(subject.id).token == "<biscuit-dog>"
    assert "&lt;biscuit-dog&gt;" in page.view.details_label.text()

    asked: list[str] = []

    def question(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.Cancel if len(asked) == 1 else QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    page.view.delete_button.click()  # cancelled: nothing happens
    assert library.find_subject("Biscuit the Second") is not None and folder.is_dir()
    page.view.delete_button.click()
    assert "2 photos" in asked[1] and "original files elsewhere on your disk are untouched" in asked[1]
    assert library.find_subject("Biscuit the Second") is None
    assert not folder.exists()
    assert [page.subject_list.item(i).text().split("\n")[0] for i in range(page.subject_list.count())] == ["Rex"]
    assert page.view.name_label.text() == "Rex"

    page.view.delete_button.click()  # the last one: the page shows its empty state
    assert page.views.currentWidget() is page.empty_view
    assert library.subjects() == []


def test_add_demo_subjects_with_the_real_engine(qtbot, aloop, run_until, library):
    engine = QtEngine()
    page = LibraryPage(engine, Settings.load(), library)
    qtbot.addWidget(page)
    page.show()
    page.demo_count = 4
    engine.start_in_background()
    try:
        run_until(lambda: engine.client.hello is not None, 60, "engine never answered hello")
        page.empty_demo_button.click()
        run_until(
            lambda: "Added the demo subjects" in page.status_label.text() or "Could not" in page.status_label.text(),
            120, page.status_label.text(),
        )
        assert "Added the demo subjects" in page.status_label.text(), page.status_label.text()
        subjects = {s.name: s for s in library.subjects()}
        assert set(subjects) == {"Dotty", "Stripe", "Smiley"}
        assert all(s.image_count >= 4 for s in subjects.values())
        assert subjects["Dotty"].token == "<dotty-star>" and subjects["Dotty"].class_noun == "star"
        assert page.view.name_label.text() == "Dotty" and page.view.grid.count() == 4
        assert page.demo_button.isEnabled() and not page.progress.isVisible()
        assert not demo_render_dir(library.home).exists()  # the render cache was cleaned up
        assert sum("✓" in line for line in page.view.results_panel.lines()) == 12
    finally:
        page.shutdown()
        engine.close()


def test_demo_subjects_without_an_engine_say_why(page, run_until):
    page.empty_demo_button.click()  # the page fixture's engine was never started
    run_until(lambda: "Could not add the demo subjects" in page.status_label.text(), 10)
    assert "not running" in page.status_label.text()
    assert page.empty_demo_button.isEnabled() and not page.progress.isVisible()
