"""Checkpoints: written to a temp folder, then renamed, so a crash never leaves a half checkpoint.

Each holds the trainable weights (safetensors), the optimizer and LR-scheduler state, and the step
and loss history. No RNG state is needed: every step draws its randomness from a generator seeded
by (seed, step), so step 401 is the same whether or not the run stopped at step 400.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
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
    try:
        tmp.mkdir()
        _write_weights(trainables.state_dict(), tmp / "trainable.safetensors")
        _write_torch({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()},
                     tmp / "optimizer.pt")
        # state.json last: its presence marks the checkpoint complete
        with open(tmp / "state.json", "w", encoding="utf-8") as fh:
            json.dump(dict(history, step=step), fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        # a half-written checkpoint (disk full, kill) is useless and holds the space the user must free
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_weights(tensors: dict, path: Path) -> None:
    """safetensors' writer reports a full disk as SafetensorError("... (os error 28)"): give it back
    as the OSError it is, so callers can tell "disk full" from a bug."""
    try:
        save_file(tensors, str(path))
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


class _WriteErrors:
    """A file wrapper that keeps the OSError of a failed write: torch.save turns it into a bare
    RuntimeError ("unexpected pos …") that no longer says the disk is full."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _write_torch(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        writer = _WriteErrors(fh)
        try:
            torch.save(obj, writer)
            fh.flush()
            os.fsync(fh.fileno())
        except RuntimeError as exc:
            if writer.error is None:
                raise
            raise writer.error from exc


def load(path: Path, trainables, optimizer, lr_scheduler) -> dict:
    trainables.load_state_dict(load_file(str(path / "trainable.safetensors")))
    # weights_only: our own file, but never unpickle arbitrary objects
    states = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    lr_scheduler.load_state_dict(states["lr_scheduler"])
    return json.loads((path / "state.json").read_text(encoding="utf-8"))
