"""Exports of a finished run (placeholder until the export formats land)."""

from __future__ import annotations


def export_run(trainer, folder) -> list[dict]:
    return []
