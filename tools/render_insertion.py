"""The README screenshots of putting a learned subject into a picture, driven through the app's own
controls with the real engine: Compare's cell menu "Put Dotty in" on a base-model picture of the
class prompt (the Edit page with the run and the insertion settings), the edit, then the same
insertion over the gallery's base-model class-prompt pictures as a batch (original | edited).
Called by ``python -m tools.render_screenshots --pages insertion`` after the Compare gallery."""

from __future__ import annotations

from pathlib import Path


def base_class_pictures(gallery) -> list[str]:
    """The gallery's base-model pictures of the class prompt (no subject word in their prompt)."""
    manifest = gallery.manifest()
    return [str(Path(gallery.folder) / image["file"]) for image in manifest.get("images", [])
            if image["column"] == "base" and image["row"] < 0]


def render_insertion(window, app, run_until, out: Path, steps: int = 25, batch: int = 4) -> tuple[Path, Path]:
    from PySide6.QtWidgets import QScrollArea

    compare = window.generate_page.compare
    if compare.gallery is None:
        raise RuntimeError("the insertion shots need the Compare gallery (with its class prompt)")
    pictures = base_class_pictures(compare.gallery)
    if not pictures:
        raise RuntimeError("the Compare gallery has no base-model pictures of the class prompt")
    window.show_page("generate")
    compare.image_menu(pictures[0], "base").actions()[1].trigger()  # "Put Dotty in"
    page = window.edit_page
    run_until(lambda: page.model_info is not None)
    page.form.steps.setValue(steps)
    page.edit_button.click()
    run_until(lambda: page.result is not None or "failed" in page.status.text(), 600)
    if page.result is None:
        raise RuntimeError(page.status.text())
    page.view.set_view("compare")
    page.findChild(QScrollArea).ensureWidgetVisible(page.form.put_in_button)
    app.processEvents()
    single = out / "edit-insertion.png"
    window.grab().save(str(single))

    view = page.start_batch(pictures[:batch])
    if view is None:
        raise RuntimeError(page.status.text())
    run_until(lambda: view.batch.over, 900)
    app.processEvents()
    grid = out / "insertion-batch.png"
    view.grab().save(str(grid))
    view.close()
    return single, grid
