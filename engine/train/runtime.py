"""What a training run needs around the loop: an accelerator for the device, the optimizer, and a
lock on the run folder. Kept apart from ``loop.py`` so benchmarks build the same pieces."""

from __future__ import annotations

from pathlib import Path

import torch

from engine import devices
from engine.jobs import JobFailed


def make_accelerator(config: dict, device: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps process-wide state; one engine runs many jobs with different settings
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    precision = config["mixed_precision"]
    if precision == "auto":
        precision = {"bfloat16": "bf16", "float16": "fp16"}.get(devices.dtype_name(device, "training"), "no")
    if not device.startswith("cuda"):
        precision = "no"  # MPS and CPU train in float32 (MPS autocast is not reliable for training)
    return Accelerator(mixed_precision=precision, cpu=device == "cpu")


def make_optimizer(config: dict, groups: list[dict], device: str):
    if config["adam_8bit"]:
        if not device.startswith("cuda"):
            raise JobFailed("8-bit Adam needs a CUDA GPU", "turn off '8-bit Adam' on this device", code="invalid_config")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise JobFailed(
                "8-bit Adam needs the bitsandbytes package", "pip install bitsandbytes, or turn it off",
                code="invalid_config",
            ) from None
        return bnb.optim.AdamW8bit(groups, weight_decay=1e-2)
    return torch.optim.AdamW(groups, weight_decay=1e-2)


def lock_run_folder(run_dir: Path):
    """Hold an exclusive lock on the run folder while training, so a second trainer (another app
    window, `s2s train --resume` in a terminal) cannot write the same checkpoints. The OS drops
    the lock when the process dies, so a crash never leaves a stale one."""
    import os

    try:
        import fcntl
    except ImportError:  # Windows: no flock; one app per library is the norm there
        return None
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 (kept open for the run's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise JobFailed(
            "this run is being trained by another process right now",
            "wait for it to finish or stop it there; resume here afterwards",
            code="run_busy",
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
