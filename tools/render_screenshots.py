"""Render the README screenshots from the real app: real engine, real model, real generation.

    python -m tools.render_screenshots [--model PATH] [--prompt P] [--out docs/screenshots]

Without --model, the shipped toy-world model (the first-run default) is used.
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
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="s2s-shots-")
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
    window.show_models()
    dialog = window.models_dialog
    page = window.generate_page
    if args.model:
        dialog.add_source(args.model, name=Path(args.model).stem)
    wanted = Path(args.model).stem if args.model else "Toy world (demo)"
    run_until(lambda: (page._model_info or {}).get("name") == wanted)
    dialog.show_message(f"Loaded <b>{wanted}</b>.")
    dialog.refresh()
    args.out.mkdir(parents=True, exist_ok=True)
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
    window.close()
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
