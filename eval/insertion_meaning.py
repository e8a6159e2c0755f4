"""Putting a learned subject into a picture, measured on the toy world: does the subject appear
where the original object was, with the layout and the rest of the picture kept?

    python -m eval.insertion_meaning [--methods lora,pivotal,dreambooth,ti] [--training-seeds 0,1,2]
                                     [--seeds 16] [--json OUT] [--runs DIR]

For each method and training seed: train the toy preset on Dotty (or reuse ``--runs DIR/<method>-<seed>``),
then for 4 single-star source scenes ("a red star on a {background} background", four backgrounds)
x N seeds run the real edit job: "a red star …" → "a <dotty-star> star …" with the run on the
target branch only. Scored by the toy evaluator, which knows nothing about the edit:
  * subject rate — the edited picture holds Dotty (shape, colour, dots);
  * object IoU — the edited object's mask against the source star's mask (layout kept);
  * PSNR outside — dB between original and edit outside both objects (the rest kept).
``--image`` does the same with the source given as a PNG file (inverted, direct inversion).
Used by tests/engine/test_insertion_meaning.py (a LoRA run, the bars of issue 23).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.edit import psnr
from engine.toy.scoring import subject_match
from eval.edit_meaning import EditSession, find, rgb

BACKGROUNDS = ("blue", "white", "gray", "green")
SOURCE = "a red star on a {background} background"
INTO = "red"  # the word that becomes the subject's token (the colour: Dotty's own is orange)


def subject_prompt(text: str, into: str, token: str, class_noun: str) -> str:
    """The target prompt: ``into`` becomes the token; the class noun itself becomes "token noun"
    (the phrase the run was trained on). The same rule as the Edit page's "Put … in"."""
    from engine.protocol.editing import insertion_target

    return insertion_target(text, into, token, class_noun)


def insertion_defaults() -> dict:
    from engine.protocol.editing import INSERTION_DEFAULTS

    return dict(INSERTION_DEFAULTS)


def score_edit(result: dict, subject) -> dict | None:
    """The toy evaluator's verdict on one edit; None when the source did not draw the red star."""
    from engine.toy.evaluator import analyse

    before, after = rgb(result["original"]), rgb(result["edited"])
    star = find(before, "red")
    if star is None or star.shape != "star":
        return None
    detections = analyse(after).detections
    matches = [d for d in detections if subject_match(d, subject)[0]]
    present = bool(matches)
    # the object that took the star's place: the subject if drawn, else whatever overlaps most
    candidates = matches or detections
    best = max(candidates, key=lambda d: (star.mask & d.mask).sum(), default=None)
    if best is None:
        return {"present": False, "iou": 0.0, "psnr_outside": psnr(before, after, ~star.mask)}
    union = star.mask | best.mask
    return {"present": present, "iou": float((star.mask & best.mask).sum() / union.sum()),
            "psnr_outside": psnr(before, after, ~union)}


def measure(session: EditSession, folder: str, subject, seeds: list[int], image: bool = False,
            backgrounds=BACKGROUNDS, **edit) -> dict:
    """Insertion of the run at ``folder`` into the source scenes; the rates and medians."""
    from engine.protocol.editing import insertion_blend_words

    settings = insertion_defaults()
    settings["blend_words"] = insertion_blend_words(subject.token, subject.class_noun)
    settings.update(edit)
    scale = settings.pop("lora_scale")
    adapter = {"folder": folder, "scale": scale}
    rows = []
    for background in backgrounds:
        source = SOURCE.format(background=background)
        target = subject_prompt(source, INTO, subject.token, subject.class_noun)
        for seed in seeds:
            params = dict(source_prompt=source, target_prompt=target, seed=seed, adapter=adapter, heatmaps=False,
                          **settings)
            if image:  # the same picture, as a file: the base model's drawing, inverted
                plain = session.edit(source_prompt=source, seed=seed, heatmaps=False)
                params.update(image=plain["original"], invert="direct")
            verdict = score_edit(session.edit(**params), subject)
            if verdict is not None:
                rows.append(dict(verdict, background=background, seed=seed))
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    if not rows:
        return {"n": 0, "subject_rate": 0.0, "iou_median": 0.0, "psnr_outside_median": 0.0, "rows": []}
    finite = [r["psnr_outside"] for r in rows if np.isfinite(r["psnr_outside"])]
    return {"n": len(rows), "subject_rate": float(np.mean([r["present"] for r in rows])),
            "iou_median": float(np.median([r["iou"] for r in rows])),
            "iou_median_subject": float(np.median([r["iou"] for r in rows if r["present"]] or [0.0])),
            "psnr_outside_median": float(np.median(finite)) if finite else float("inf"), "rows": rows}


def train(session: EditSession, method: str, seed: int, workdir: Path, subject_name: str = "Dotty") -> str:
    """The toy preset of ``method`` trained on the subject's photos; its exports folder."""
    from benchmarks.toy_personalize import run_method

    exports = workdir / f"{method}-{seed}" / method / "exports"
    if not (exports / "run_config.json").is_file():
        run_method(session.loaded, method, subject_name, [], workdir / f"{method}-{seed}", overrides={"seed": seed},
                   score=False)
    return str(exports)


def main(argv=None) -> int:
    from engine.toy.subjects import get_subject

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora")
    parser.add_argument("--training-seeds", default="0")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--image", action="store_true", help="source pictures given as PNG files (inverted)")
    parser.add_argument("--runs", type=Path, default=None, help="keep/reuse trained runs here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    subject = get_subject("Dotty")
    seeds = list(range(args.seeds))
    workdir = args.runs or Path(tempfile.mkdtemp(prefix="s2s-insertion-"))
    session = EditSession()
    table = []
    for method in args.methods.split(","):
        for training_seed in (int(s) for s in args.training_seeds.split(",")):
            started = time.perf_counter()
            folder = train(session, method, training_seed, workdir)
            trained = time.perf_counter() - started
            for image in ([False, True] if args.image else [False]):
                scores = measure(session, folder, subject, seeds, image=image)
                table.append(dict(method=method, training_seed=training_seed, image=image, train_s=round(trained, 1),
                                  **scores))
                print(_row(table[-1]), flush=True)
    print(f"\n{'method':<11} {'tseed':>5} {'source':>6} {'n':>4} {'subject':>8} {'IoU':>6} {'PSNR out':>9}")
    for row in table:
        print(_row(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"subject": subject.name, "seeds": len(seeds), "rows": table}, indent=2))
    return 0


def _row(row: dict) -> str:
    return (f"{row['method']:<11} {row['training_seed']:>5} {'png' if row['image'] else 'seed':>6} {row['n']:>4} "
            f"{100 * row['subject_rate']:>7.0f}% {row['iou_median']:>6.2f} {row['psnr_outside_median']:>8.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
