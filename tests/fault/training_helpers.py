"""Real training runs on the shipped toy-world model for the fault tests (disk full, numerical).

The model is loaded once per test session and shared by every fault test that trains; each run is
the real ``Trainer`` with a tiny config (64 px, a few steps), so one run takes a second or two.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.train.conftest import TOY, tiny_config

TOKEN, CLASS_NOUN = "<dotty-star>", "star"


@functools.cache
def toy_model():
    from engine.models.registry import ModelCache, resolve_source

    cache = ModelCache()
    cache.load(resolve_source({"source": str(TOY)}), "cpu")
    return cache.current


def render_photos(folder: Path, count: int = 4) -> list[str]:
    from engine.toy.subjects import get_subject, render_subject_photos

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, photo in enumerate(render_subject_photos(get_subject("Dotty"), count, 64, seed=0)):
        paths.append(str(folder / f"{i}.png"))
        photo.save(paths[-1])
    return paths


def make_trainer(run_dir: Path, photos: list[str], method: str = "lora", resume: bool = False,
                 unchecked: dict | None = None, **overrides):
    """A Trainer as the engine builds it. ``overrides`` go through the protocol's validation like a
    user's settings; ``unchecked`` is applied after it (values no user can enter, e.g. lr 1e30)."""
    from engine.jobs import Job, JobContext
    from engine.protocol import validate_job
    from engine.train.loop import RunSpec, Trainer

    # a small LoRA (rank 8 on attention, ~0.3 MB a checkpoint): the disk-full tests size their disks to it
    small = {"rank": 8, "lora_layers": "attention"} if method in ("lora", "pivotal") else {}
    overrides = {"prior": False, "keep_checkpoints": 2, **small, **overrides}
    params = validate_job("train", dict(
        method=method, token=TOKEN, class_noun=CLASS_NOUN, images=photos, run_dir=str(run_dir),
        class_cache_dir="", config=tiny_config(method, **overrides), resume=resume, preflight=False,
    ))
    config = dict(params["config"], **(unchecked or {}))
    events: list[dict] = []
    job = Job("train", params)
    spec = RunSpec(method, TOKEN, CLASS_NOUN, photos, Path(run_dir), config, resume=resume)
    trainer = Trainer(toy_model(), spec, JobContext(job, events.append, max_rate=1e9))
    trainer.events, trainer.job = events, job
    return trainer


def progress_steps(trainer) -> list[int]:
    return [e["step"] for e in trainer.events if e["event"] == "progress" and e.get("phase") == "train"]


def artifacts(trainer, kind: str) -> list[dict]:
    return [e for e in trainer.events if e["event"] == "artifact" and e.get("kind") == kind]


def checkpoint_names(run_dir: Path) -> list[str]:
    """Everything in the checkpoints folder, temp and leftover names included."""
    folder = Path(run_dir) / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def weights_finite(checkpoint_folder: Path) -> bool:
    state = load_file(str(checkpoint_folder / "trainable.safetensors"))
    return bool(state) and all(bool(torch.isfinite(t).all()) for t in state.values())
