"""The shipped toy-world model: the demo default of every command and the GUI's first-run model."""

from __future__ import annotations

import sys
from pathlib import Path

DEMO_MODEL_NAME = "Toy world (demo)"


def resources_dir() -> Path:
    """``resources/`` beside the packages, or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def toy_model_path() -> Path:
    return resources_dir() / "toy-world"


def toy_model_available() -> bool:
    return (toy_model_path() / "model_index.json").is_file()


def demo_entry():
    from s2s_desktop.settings import ModelEntry

    return ModelEntry(name=DEMO_MODEL_NAME, source=str(toy_model_path()), kind="folder")
