"""Guard against a Qt binding that leaks references to None/True (PySide6 6.12.0 on CPython 3.11
aborted the app with "none_dealloc" a few minutes into a training run)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    fired = Signal(int)


def test_calls_and_signals_keep_none_and_true_refcounts(qapp):
    label = QLabel()
    emitter = _Emitter()
    before_none, before_true = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(1000):
        label.setText("x")
        emitter.fired.emit(1)
    # small drift from the interpreter itself is fine; a per-call leak would be -1000
    assert abs(sys.getrefcount(None) - before_none) < 100
    assert abs(sys.getrefcount(True) - before_true) < 100
