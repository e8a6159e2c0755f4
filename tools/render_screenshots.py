"""Render the README screenshots from the real app: real engine, real model, real generation.

    python -m tools.render_screenshots [--model PATH] [--prompt P] [--out docs/screenshots]
                                       [--pages generate,library,train,edit,compare,evaluate,insertion]

Without --model, the shipped toy-world model (the first-run default) is used. The library shot adds
the demo subjects through the page's own button (the engine renders their photos), then drops two
unusable files on Dotty so the import results show refusals with their reasons. The train shot runs
a preflight and a short real LoRA run on Dotty, and is taken while that run is still training. The
edit shot (tools/render_edit.py) edits a red star into a green one, reweights "green" live and shows
the heatmap of "star" over the result. The compare shot waits for a finished LoRA run of Dotty (the
train shot's, or one it trains the same way), then draws a gallery of the base model and that run on
the toy-world prompts with four seeds and the class prompt; the evaluate shot scores that gallery
(offline: the toy evaluator's scores, and "not available" with its reason where a feature model is
missing). The insertion shots (tools/render_insertion.py) put Dotty into the gallery's base-model
pictures of the class prompt: one through Compare's cell menu on the Edit page, then all of them as
a batch (original | edited).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--prompt", default="a red star on a blue background")
    parser.add_argument("--size", type=int, default=0, help="image size (default: the model's native size)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--home", type=Path, help="the app's data folder (default: a fresh temporary one); "
                        "reuse one to keep its subjects, runs and class images between renders")
    parser.add_argument("--pages", default="generate,library,train,edit,compare,evaluate,insertion",
                        help="comma-separated: generate, library, train, edit, compare, evaluate, insertion")
    args = parser.parse_args(argv)
    pages = set(args.pages.split(","))
    home = str(args.home) if args.home else tempfile.mkdtemp(prefix="s2s-shots-")
    os.environ["S2S_HOME"] = home
    import qasync

    from s2s_desktop.app import build_window, create_app

    app = create_app()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = build_window()
    window.resize(1280, 820)
    window.show()

    def run_until(predicate, timeout=300):
        async def poll():
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError
                await asyncio.sleep(0.05)

        loop.run_until_complete(poll())

    run_until(lambda: window.engine.client.hello is not None)
    args.out.mkdir(parents=True, exist_ok=True)
    if "generate" in pages:
        window.show_models()
        dialog = window.models_dialog
        page = window.generate_page
        if args.model:
            dialog.add_source(args.model, name=Path(args.model).stem)
        wanted = Path(args.model).stem if args.model else "Toy world (demo)"
        run_until(lambda: (page._model_info or {}).get("name") == wanted)
        dialog.show_message(f"Loaded <b>{wanted}</b>.")
        dialog.refresh()
        dialog.grab().save(str(args.out / "models-dialog.png"))
        dialog.close()
        page.prompt.setPlainText(args.prompt)
        page.negative.setPlainText("")  # the toy world has no words for image quality
        page.seed.setValue(3)
        page.steps.setValue(25)
        page.batch.setValue(4)
        if args.size:
            page.width_box.setValue(args.size)
            page.height_box.setValue(args.size)
        page.generate_button.click()
        run_until(lambda: page.results.count() >= 4 and page.generate_button.isEnabled())
        window.jobs_dock.tree.setCurrentItem(window.jobs_dock.tree.topLevelItem(0))
        app.processEvents()
        window.grab().save(str(args.out / "generate.png"))
        viewer = page.show_item(page.results.item(0))
        app.processEvents()
        viewer.grab().save(str(args.out / "image-viewer.png"))
        viewer.close()
    if "library" in pages:
        render_library(window, app, run_until, args.out)
    if "train" in pages:
        render_train(window, app, run_until, args.out)
    if "edit" in pages:
        from tools.render_edit import render_edit

        render_edit(window, app, run_until, args.out)
    if "compare" in pages or "evaluate" in pages or "insertion" in pages:
        render_compare(window, app, run_until, args.out, shoot="compare" in pages)
    if "evaluate" in pages:
        render_evaluate(window, app, run_until, args.out)
    if "insertion" in pages:
        from tools.render_insertion import render_insertion

        render_insertion(window, app, run_until, args.out)
    window.close()
    print(f"written to {args.out}")
    return 0


def add_demo_subjects(window, run_until) -> None:
    page = window.library_page
    if page.library.find_subject("Dotty") is not None:
        return
    window.show_page("library")
    page.empty_demo_button.click()
    run_until(lambda: "Added the demo subjects" in page.status_label.text() or "Could not" in page.status_label.text())
    if "Could not" in page.status_label.text():
        raise RuntimeError(page.status_label.text())


def render_library(window, app, run_until, out: Path) -> None:
    from PIL import Image

    page = window.library_page
    add_demo_subjects(window, run_until)
    window.show_page("library")
    dotty = page.library.subject("Dotty")
    page.refresh_subjects(select_id=dotty.id)
    extras = Path(tempfile.mkdtemp(prefix="s2s-extras-"))
    Image.new("RGB", (120, 120), (230, 120, 40)).save(extras / "dotty-sticker.png")
    (extras / "notes.txt").write_text("shopping list", encoding="utf-8")
    page.import_paths(dotty.id, [extras / "dotty-sticker.png", extras / "notes.txt"])
    run_until(lambda: not page.workers.batches)
    placeholder = page.workers.placeholder.cacheKey()
    grid, subjects = page.view.grid, page.subject_list
    run_until(
        lambda: all(grid.item(i).icon().cacheKey() != placeholder for i in range(grid.count()))
        and all(subjects.item(i).icon().cacheKey() != placeholder for i in range(subjects.count()))
    )
    app.processEvents()
    window.grab().save(str(out / "library.png"))


def render_train(window, app, run_until, out: Path, steps: int = 150) -> None:
    """Mid-run: the preflight's numbers, the loss curve and three rows of samples, still training."""
    add_demo_subjects(window, run_until)
    page = window.train_page
    window.show_page("train")
    run_until(lambda: page.model_info is not None)
    page.refresh_subjects(select_id=page.library.subject("Dotty").id)
    page.cards.set_method("lora")
    # the toy preset, shortened so the shot takes a minute or two on a laptop CPU
    settings = {"steps": steps, "sample_every": steps // 5, "class_images": 16, "checkpoint_every": 50}
    for name, value in settings.items():
        page.editor.editors[name].setText(str(value))
        page.editor.editors[name].textEdited.emit(str(value))
    page.preflight_button.click()
    run_until(lambda: page.preflight_result.isVisible())
    page.train_button.click()
    run_until(lambda: len(page.monitor.samples.steps()) >= 3 and page.monitor.live is not None
              and page.monitor.live.step >= 0.45 * steps)
    app.processEvents()
    window.grab().save(str(out / "train.png"))


def start_train_run(window, run_until, steps: int = 150) -> None:
    """A short real LoRA run of Dotty through the Train page (the toy preset, shortened)."""
    page = window.train_page
    window.show_page("train")
    run_until(lambda: page.model_info is not None)
    page.refresh_subjects(select_id=page.library.subject("Dotty").id)
    page.cards.set_method("lora")
    from PySide6.QtWidgets import QPlainTextEdit

    # no samples along the way and one small final one: on a busy CPU the samples cost more than the steps
    settings = {"steps": steps, "sample_every": 0, "class_images": 16, "checkpoint_every": 50,
                "sample_prompts": ["a photo of {token} {class}"], "sample_seeds": [0], "sample_steps": 10}
    for name, value in settings.items():
        editor = page.editor.editors[name]
        if isinstance(editor, QPlainTextEdit):
            editor.setPlainText("\n".join(value))
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        editor.setText(text)
        editor.textEdited.emit(text)
    if page.validate() is None:
        raise RuntimeError(f"the shortened run's settings are refused: {page.problem.text()}")
    page.train_button.click()
    run_until(lambda: page.jobs.live)


def finished_dotty_run(window, run_until, timeout: float = 1800):
    """Dotty's newest finished run: the train shot's run once it ends, or a new one."""
    from s2s_desktop.pages.compare import finished_runs

    library = window.train_page.library
    dotty = library.subject("Dotty")
    if not finished_runs(library, dotty.id):
        if not window.train_page.jobs.active_runs():
            start_train_run(window, run_until)
        run_until(lambda: bool(finished_runs(library, dotty.id)) or not window.train_page.jobs.active_runs(), timeout)
    runs = finished_runs(library, dotty.id)
    if not runs:
        raise RuntimeError("the LoRA run of Dotty did not finish")
    return runs[0]


def render_compare(window, app, run_until, out: Path, shoot: bool = True, prompts: int = 4) -> None:
    """Generate → Compare: the base model and a finished LoRA run on toy-world prompts, four seeds."""
    add_demo_subjects(window, run_until)
    run = finished_dotty_run(window, run_until)
    window.show_page("generate")
    page = window.generate_page
    page.set_mode("compare")
    panel = page.compare
    run_until(lambda: panel.model_info is not None)
    panel.refresh_subjects(select_id=window.train_page.library.subject("Dotty").id)
    panel.select_prompt_list("toy-world")
    lines = panel.templates.toPlainText().splitlines()
    panel.templates.setPlainText("\n".join(lines[:prompts]))
    for row in panel.column_rows:
        row.check.setChecked(row.run is None or row.run.id == run.id)
    panel.seeds.setText("0-3")
    panel.steps.setValue(25)
    panel.prior.setChecked(True)
    panel.generate_button.click()
    run_until(lambda: panel.gallery is not None or "Failed" in panel.status.text(), 1200)
    if panel.gallery is None:
        raise RuntimeError(panel.status.text())
    if shoot:
        app.processEvents()
        window.grab().save(str(out / "compare.png"))


def render_evaluate(window, app, run_until, out: Path) -> None:
    """The Compare gallery scored: Evaluate… on the Generate page, then Evaluate."""
    panel = window.generate_page.compare
    panel.evaluate_button.click()
    page = window.evaluate_page
    run_until(lambda: page.gallery is not None and page.gallery.id == panel.gallery.id)
    page.evaluate_button.click()
    run_until(lambda: page.current_job is None and ("Scored" in page.status.text() or "failed" in page.status.text()),
              1200)
    if "failed" in page.status.text():
        raise RuntimeError(page.status.text())
    app.processEvents()
    window.grab().save(str(out / "evaluate.png"))


if __name__ == "__main__":
    sys.exit(main())
