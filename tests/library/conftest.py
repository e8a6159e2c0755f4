"""Fixtures for the subject library: a fresh library per test and photo factories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2s_desktop.library import Library


@pytest.fixture
def library(isolated_home) -> Library:
    lib = Library(isolated_home)
    yield lib
    lib.close()


@pytest.fixture
def photo(tmp_path):
    """photo(name, seed=0, size=(400, 300), mode="RGB") writes a distinct random-ish photo."""

    def make(name: str, seed: int = 0, size=(400, 300), **save_args) -> Path:
        rng = np.random.default_rng(seed)
        # smooth blobs rather than noise, so JPEG re-encoding stays close (near-duplicate tests)
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = tmp_path / name
        image.save(path, **save_args)
        return path

    return make
