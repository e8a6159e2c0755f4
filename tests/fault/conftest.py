"""The fault suite's shared record: each test says which faults it tried, how many the app survived
(a clear message and a state the user can continue from) and how much user data was lost.

``python -m tests.fault.report`` runs this folder with ``S2S_FAULT_REPORT`` set and prints the
table; under a plain ``make test`` the records are only checked (data lost must be 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pytest


@dataclass
class FaultRecord:
    category: str  # a row of the report: "engine killed", "protocol fuzzing", …
    fault: str  # what was done, in a few words
    tried: int
    survived: int
    data_lost: int  # user files/rows lost: photos, catalog rows, checkpoints beyond one interval
    note: str = ""
    test: str = ""


class FaultLog:
    def __init__(self, test: str):
        self.test = test
        self.records: list[FaultRecord] = []

    def record(self, category: str, fault: str, *, tried: int = 1, survived: int | bool = 1,
               data_lost: int = 0, note: str = "") -> FaultRecord:
        """Call once the test has checked the outcome (so a failed assert records nothing)."""
        survived = int(survived) if not isinstance(survived, bool) else int(survived) * tried
        entry = FaultRecord(category, fault, tried, survived, data_lost, note, self.test)
        self.records.append(entry)
        return entry


@pytest.fixture
def faults(request):
    log = FaultLog(request.node.nodeid)
    yield log
    path = os.environ.get("S2S_FAULT_REPORT")
    if path and log.records:
        with open(path, "a", encoding="utf-8") as fh:
            for entry in log.records:
                fh.write(json.dumps(asdict(entry)) + "\n")
    for entry in log.records:
        assert entry.data_lost == 0, f"{entry.fault}: {entry.data_lost} items of user data lost"


# The GUI tests' Qt+asyncio loop helpers and toy-world engine (the kill tests drive the real pages).
from tests.gui.conftest import aloop, run_until, toy_engine  # noqa: E402, F401
