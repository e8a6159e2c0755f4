"""GUI fixtures: a qasync loop around pytest-qt's QApplication, and a helper to run it."""

from __future__ import annotations

import asyncio
import time

import pytest


@pytest.fixture
def aloop(qapp):
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def run_until(aloop):
    """Run the Qt+asyncio loop until predicate() is true (async slots need a running loop)."""

    def run(predicate, timeout: float = 60.0, message: str = ""):
        async def poll():
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError(message or "condition not met")
                await asyncio.sleep(0.02)

        aloop.run_until_complete(poll())

    return run


@pytest.fixture(scope="module")
def toy_engine(qapp):
    """A real engine with the shipped toy-world model loaded (one per test module)."""
    from s2s_desktop.demo import demo_entry, toy_model_available
    from s2s_desktop.qt_engine import QtEngine

    if not toy_model_available():
        pytest.skip("the toy-world model is not in this checkout")
    engine = QtEngine()
    engine.client.start()
    engine.client.load_model(demo_entry().load_params("cpu")).result(timeout=180)
    yield engine
    engine.close()
