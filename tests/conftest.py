"""Shared fixtures: an isolated app home per test, tiny models built from configs (no downloads)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own S2S_HOME so settings and outputs never leak between tests."""
    home = tmp_path_factory.mktemp("s2s_home")
    monkeypatch.setenv("S2S_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SD-1-shaped diffusers folder (random weights, safetensors)."""
    from engine.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_single_file(tiny_model_dir, tmp_path_factory) -> Path:
    """The same tiny model as one original-layout (A1111-style) .safetensors file."""
    from tests.helpers.ldm_export import export_ldm_single_file

    return export_ldm_single_file(tiny_model_dir, tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")
