"""Meaning checks for personalisation on the toy world: does a trained run draw the subject?

    python -m benchmarks.toy_personalize [--methods lora,pivotal,ti,dreambooth] [--subject Dotty]
                                         [--seeds 32] [--steps N] [--json OUT] [--model DIR]
                                         [--training-seeds 0,1,2] [--set key=value ...] [--keep DIR]

For each method: train on the subject's rendered photos with the toy preset (prior preservation
on where the method uses it), then with 32 fixed seeds score
  * subject rate — instance-prompt images ("a photo of <token> star") in which the toy evaluator finds the subject
    (shape, colour within ΔE, markings); the base model is scored on the same prompt;
  * class accuracy — world captions of the subject's class without the token ("a photo of a red
    star" …): colour and shape right, before vs after training (prior preservation keeps it).
Bars (issue 23): LoRA and pivotal ≥ 70% subject rate averaged over 3 training seeds (none below 55%),
base ≤ 10%, class accuracy within 10 points (≥ 29 of 32) for each training seed.
``--training-seeds`` trains each method once per seed (the config's ``seed``: batches, noise, timesteps);
``--set`` overrides preset fields (JSON values: ``--set lr_schedule='"cosine"' --set steps=700``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.toy.scoring import score_caption, subject_present
from engine.toy.subjects import get_subject, render_subject_photos

TOY_MODEL = Path(__file__).resolve().parents[1] / "resources" / "toy-world"
CLASS_COLOURS = ("red", "blue", "green", "purple", "yellow", "orange")


def generate(pipe, prompts: list[str], seeds: list[int], steps: int = 20, batch: int = 16) -> list:
    """Images for prompt i with seed i (CPU generators: the same on every device)."""
    import torch

    images = []
    for start in range(0, len(prompts), batch):
        chunk = list(range(start, min(start + batch, len(prompts))))
        with torch.no_grad():
            images += pipe(
                [prompts[i] for i in chunk], num_inference_steps=steps, guidance_scale=7.5,
                generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in chunk],
            ).images
    return images


def score_pipeline(pipe, subject, prompt: str, seeds: list[int]) -> dict:
    subject_images = generate(pipe, [prompt] * len(seeds), seeds)
    present = [subject_present(np.asarray(image), subject)[0] for image in subject_images]
    captions = [f"a photo of a {CLASS_COLOURS[i % len(CLASS_COLOURS)]} {subject.class_noun}" for i in range(len(seeds))]
    class_images = generate(pipe, captions, seeds)
    class_ok = [bool(score_caption(np.asarray(im), cap)["object_ok"]) for im, cap in zip(class_images, captions, strict=True)]
    return {"subject_rate": float(np.mean(present)), "class_accuracy": float(np.mean(class_ok))}


def run_method(loaded, method: str, subject_name: str, seeds: list[int], workdir: Path, steps: int | None = None,
               overrides: dict | None = None, score: bool = True, class_cache: Path | None = None) -> dict:
    """Train ``method``'s toy preset in ``workdir/method`` (exports kept there) and, with ``score``,
    score the trained model on ``seeds``."""
    from engine.jobs import Job, JobContext
    from engine.protocol import validate_job
    from engine.protocol.training import preset
    from engine.train.loop import RunSpec, Trainer

    subject = get_subject(subject_name)
    class_cache = class_cache or workdir / "class-cache"
    photo_dir = workdir / "photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, photo in enumerate(render_subject_photos(subject, 8, 64, seed=0)):
        paths.append(str(photo_dir / f"{i}.png"))
        photo.save(paths[-1])
    config = preset(method, len(paths), "cpu", toy=True)
    config.update(sample_every=0, sample_seeds=[0], checkpoint_every=10_000)
    if steps:
        config["steps"] = steps
    config.update(overrides or {})
    params = validate_job(
        "train",
        dict(method=method, token=subject.token, class_noun=subject.class_noun, images=paths,
             run_dir=str(workdir / method), class_cache_dir=str(class_cache), config=config),
    )
    spec = RunSpec(method, subject.token, subject.class_noun, paths, workdir / method, params["config"],
                   class_cache_dir=class_cache)
    scores: dict = {}
    trainer = Trainer(loaded, spec, JobContext(Job("train", params), lambda event: None))
    if score:
        trainer.on_trained = lambda tr: scores.update(
            score_pipeline(tr.sampling_pipeline(), subject, tr.instance_prompt, seeds)
        )
    started = time.perf_counter()
    result = trainer.run()
    scores.update(method=method, steps=params["config"]["steps"], seconds=round(time.perf_counter() - started, 1),
                  final_loss=result["final_loss"])
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora,pivotal,ti,dreambooth")
    parser.add_argument("--subject", default="Dotty")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="override the toy preset's steps")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=TOY_MODEL, help="a toy-world model folder (default: the shipped one)")
    parser.add_argument("--training-seeds", default="0", help="comma-separated training seeds (one run each)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the runs in DIR/<method>-<seed> (eval.insertion_meaning --runs DIR reuses them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a preset field")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # a bare word: a string field

    from engine.models.registry import ModelCache, resolve_source

    cache = ModelCache()
    cache.load(resolve_source({"source": str(args.model)}), "cpu")
    loaded = cache.current
    subject = get_subject(args.subject)
    seeds = list(range(1000, 1000 + args.seeds))
    from engine.protocol.training import fill_prompt, preset

    prompt = fill_prompt(preset("lora", 8, "cpu", toy=True)["instance_prompt"], subject.token, subject.class_noun)
    base = score_pipeline(loaded.pipeline, subject, prompt, seeds)
    rows = [dict(base, method="base model", steps=0, seconds=0.0, final_loss=None)]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for method in args.methods.split(","):
            for training_seed in [int(s) for s in args.training_seeds.split(",")]:
                row = run_method(loaded, method, args.subject, seeds, root / f"{method}-{training_seed}",
                                 args.steps, dict(overrides, seed=training_seed),
                                 class_cache=root / "class-cache")  # made once, shared by the seeds
                row.update(training_seed=training_seed, overrides=overrides)
                rows.append(row)
                print(_row(rows[-1], base), flush=True)
    print(f"\nsubject {subject.name} ({subject.token}), {len(seeds)} seeds, toy world on CPU")
    print(f"{'method':<12} {'steps':>5} {'subject':>8} {'class acc':>10} {'Δ class':>8} {'train s':>8} {'seed':>5}")
    for row in rows:
        print(_row(row, base))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"subject": subject.name, "seeds": len(seeds), "rows": rows}, indent=2))
    return 0


def _row(row: dict, base: dict) -> str:
    delta = 100 * (row["class_accuracy"] - base["class_accuracy"])
    return (f"{row['method']:<12} {row['steps']:>5} {100 * row['subject_rate']:>7.0f}% "
            f"{100 * row['class_accuracy']:>9.0f}% {delta:>+7.0f}  {row['seconds']:>8.1f} {row.get('training_seed', ''):>5}")


if __name__ == "__main__":
    raise SystemExit(main())
