"""Setters that only call Qt when the value changes.

A live page updates the same labels ten times a second. Skipping unchanged values saves relayouts,
and it also keeps the count of calls into PySide setters down: the PySide6 6.12 abi3 wheels on
Python 3.11 drop a reference to ``None`` on every call that returns nothing, and the interpreter
aborts ("none_dealloc") once those run out — fewer calls put that off until the dependency is fixed.
"""

from __future__ import annotations


def set_text(widget, text: str) -> None:
    if widget.text() != text:
        widget.setText(text)


def set_enabled(widget, on: bool) -> None:
    if widget.isEnabled() != on:
        widget.setEnabled(on)


def set_visible(widget, on: bool) -> None:
    if widget.isHidden() == on:
        widget.setVisible(on)


def set_progress(bar, value: int, total: int) -> None:
    total = max(int(total), 1)
    if bar.maximum() != total or bar.minimum() != 0:
        bar.setRange(0, total)
    value = min(max(int(value), 0), total)
    if bar.value() != value:
        bar.setValue(value)


def set_tooltip(widget, text: str) -> None:
    if widget.toolTip() != text:
        widget.setToolTip(text)
