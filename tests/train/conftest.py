"""Training fixtures: the shipped toy-world model loaded once, a subject's photos, a run factory."""

from __future__ import annotations

from pathlib import Path

import pytest

TOY = Path(__file__).resolve().parents[2] / "resources" / "toy-world"


@pytest.fixture(scope="session")
def toy_loaded():
    from engine.models.registry import ModelCache, resolve_source

    cache = ModelCache()
    cache.load(resolve_source({"source": str(TOY)}), "cpu")
    return cache.current


@pytest.fixture(scope="session")
def dotty_photos(tmp_path_factory) -> list[str]:
    from engine.toy.subjects import get_subject, render_subject_photos

    folder = tmp_path_factory.mktemp("dotty")
    paths = []
    for i, photo in enumerate(render_subject_photos(get_subject("Dotty"), 6, 64, seed=0)):
        paths.append(str(folder / f"{i}.png"))
        photo.save(paths[-1])
    return paths


def tiny_config(method: str, **overrides) -> dict:
    from engine.protocol.training import preset

    config = preset(method, 6, "cpu", toy=True)
    config.update(
        steps=6, class_images=2, class_image_steps=2, sample_every=0, sample_steps=2, sample_seeds=[0],
        sample_prompts=["a photo of {token}"], checkpoint_every=2, batch=2,
    )
    config.update(overrides)
    return config


@pytest.fixture
def make_trainer(toy_loaded, dotty_photos, tmp_path):
    from engine.jobs import Job, JobContext
    from engine.protocol import validate_job
    from engine.train.loop import RunSpec, Trainer

    def make(method: str, run_dir: Path | None = None, resume: bool = False, preflight: bool = False, **overrides):
        params = validate_job("train", dict(
            method=method, token="<dotty-star>", class_noun="star", images=dotty_photos,
            run_dir=str(run_dir or tmp_path / method), class_cache_dir=str(tmp_path / "class-cache"),
            config=tiny_config(method, **overrides), resume=resume, preflight=preflight,
        ))
        events: list[dict] = []
        job = Job("train", params)
        spec = RunSpec(method, "<dotty-star>", "star", dotty_photos, Path(params["run_dir"]), params["config"],
                       class_cache_dir=Path(params["class_cache_dir"]), resume=resume, preflight=preflight)
        trainer = Trainer(toy_loaded, spec, JobContext(job, events.append, max_rate=1e9))
        trainer.events, trainer.job = events, job
        return trainer

    return make
