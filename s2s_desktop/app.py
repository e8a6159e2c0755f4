"""Starting the GUI: QApplication under qasync, the main window, and offscreen screenshots."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


def create_app(argv: list[str] | None = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName("Subject2Subject")
    app.setOrganizationName("Subject2Subject")
    return app


def build_window(start_engine: bool = True):
    from s2s_desktop.main_window import MainWindow
    from s2s_desktop.qt_engine import QtEngine
    from s2s_desktop.settings import Settings

    return MainWindow(QtEngine(), Settings.load(), start_engine=start_engine)


def run_gui(page: str | None = None) -> int:
    import qasync

    app = create_app()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    window = build_window()
    if page:
        window.show_page(page)
    window.show()
    closed = asyncio.Event()
    app.aboutToQuit.connect(closed.set)
    with loop:
        loop.run_until_complete(closed.wait())
    return 0


def screenshot(out: str | Path, page: str = "generate", size: tuple[int, int] = (1280, 820)) -> Path:
    """Render the main window offscreen to a PNG (no engine is started)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import qasync

    app = create_app()
    asyncio.set_event_loop(qasync.QEventLoop(app))
    window = build_window(start_engine=False)
    window.show_page(page)
    window.resize(*size)
    window.show()
    app.processEvents()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(out)):
        raise OSError(f"could not write {out}")
    window.close()
    return out
