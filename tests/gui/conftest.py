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
