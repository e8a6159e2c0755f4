"""The diffusers → original-layout (LDM) single-file converter, for tests.

The converter itself lives in ``engine/train/ldm_convert.py`` (DreamBooth exports use it); this
module keeps the names the tests and fixtures import.
"""

from __future__ import annotations

from engine.train.ldm_convert import (  # noqa: F401  (re-exported for tests)
    CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    convert_clip_to_ldm,
    convert_unet_to_ldm,
    convert_vae_to_ldm,
    export_ldm_single_file,
)
