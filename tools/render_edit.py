"""The Edit page's README screenshot, driven through the page's own controls with the real engine:
an edit (red star → green star), a live reweight of one word, and the heatmap of "star" over the
reweighted result. Called by ``python -m tools.render_screenshots --pages edit``."""

from __future__ import annotations

from pathlib import Path

SOURCE = "a red star on a blue background"
TARGET = "a green star on a blue background"


def render_edit(window, app, run_until, out: Path, seed: int = 5, steps: int = 50,
                reweight: tuple[str, float] = ("green", 2.5), heatmap_word: str = "star") -> Path:
    page = window.edit_page
    window.show_page("edit")
    run_until(lambda: page.model_info is not None)
    form = page.form
    form.source_prompt.setText(SOURCE)
    form.target_prompt.setText(TARGET)
    form.seed.setValue(seed)
    form.steps.setValue(steps)
    page.edit_button.click()
    run_until(lambda: page.result is not None or "failed" in page.status.text())
    if page.result is None:
        raise RuntimeError(page.status.text())

    word, weight = reweight
    strip = page.view.strips["target"]
    chip = next(c for c in strip.chips if c.word == word)
    first = page.result
    chip.slider.setValue(round(weight * 10))  # what a drag ends on; the page re-renders live
    run_until(lambda: page.result is not first and not page.runner.busy)
    page.view.pick_words("target", [heatmap_word])
    page.view.set_view("heatmap")
    app.processEvents()
    path = out / "edit.png"
    window.grab().save(str(path))
    return path
