"""Checkpoints: written to a temp folder, then renamed, so a crash never leaves a half checkpoint.

Each holds the trainable weights (safetensors), the optimizer and LR-scheduler state, and the step
and loss history. No RNG state is needed: every step draws its randomness from a generator seeded
by (seed, step), so step 401 is the same whether or not the run stopped at step 400.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

KEEP = 2  # default: the newest checkpoints kept; older ones are deleted once a newer one is complete


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: Path) -> Path | None:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    complete = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def save(run_dir: Path, step: int, trainables, optimizer, lr_scheduler, history: dict, keep: int = KEEP) -> Path:
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainables.state_dict(), str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}, tmp / "optimizer.pt")
    # state.json last: its presence marks the checkpoint complete
    with open(tmp / "state.json", "w", encoding="utf-8") as fh:
        json.dump(dict(history, step=step), fh)
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in folder.glob("step-*") if p != final)[:-(max(keep, 1) - 1) or None]:
        # rename first: a kill during rmtree must not leave a "step-…" folder missing half its files
        doomed = folder / f".old-{old.name}"
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for leftover in folder.glob(".old-*"):  # from a run killed mid-delete
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def load(path: Path, trainables, optimizer, lr_scheduler) -> dict:
    trainables.load_state_dict(load_file(str(path / "trainable.safetensors")))
    # weights_only: our own file, but never unpickle arbitrary objects
    states = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    lr_scheduler.load_state_dict(states["lr_scheduler"])
    return json.loads((path / "state.json").read_text(encoding="utf-8"))
