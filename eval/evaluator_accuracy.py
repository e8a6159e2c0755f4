"""How accurate is the toy evaluator? Measured on held-out toy-world scenes with known ground truth.

    python -m eval.evaluator_accuracy [--n 1000] [--n-512 100] [--subject-photos 16]

Scenes use seeds from ``HELD_OUT_SEED`` upwards (one generator per scene, so scene ``i`` is the
same whatever ``--n`` is), alternating one- and two-object scenes. Each is scored clean and
degraded the way a generative model's output differs from a render ("blur+noise": Gaussian blur,
radius 1 per 64 px, then Gaussian noise, sigma 8; "harsh", a stress test: blur radius 2 per 64 px,
a global colour cast of sd 12 per channel, noise sigma 16), at 64 px and on a 512 px subset.

Per ground-truth object, detections are matched by mask IoU (best one-to-one assignment; an object
with no overlapping detection counts as wrong with IoU 0): shape / colour accuracy, mean mask IoU.
Per scene: background accuracy, count accuracy (as many detections as objects), and for two-object
scenes whether ``score_caption`` finds the caption's relation to hold.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from PIL import Image, ImageFilter

from engine.toy.evaluator import analyse
from engine.toy.scoring import score_caption, subject_present
from engine.toy.subjects import SUBJECTS, render_subject_photos
from engine.toy.world import Scene, render, sample_scene

HELD_OUT_SEED = 10_000  # nothing else in the project draws toy scenes from seeds >= 10_000
NOISE_SEED = 20_000


def held_out_scene(i: int) -> Scene:
    return sample_scene(np.random.default_rng(HELD_OUT_SEED + i), n_objects=1 + i % 2)


DEGRADATIONS = {
    "clean": None,
    "blur+noise": {"blur_per_64px": 1.0, "sigma": 8.0, "cast": 0.0},  # the brief's bar
    "harsh": {"blur_per_64px": 2.0, "sigma": 16.0, "cast": 12.0},  # stress test, beyond the bar
}


def degrade(
    image: np.ndarray, seed: int, blur_per_64px: float = 1.0, sigma: float = 8.0, cast: float = 0.0
) -> np.ndarray:
    """Gaussian blur (radius scaled with the image size), a global colour cast (per-channel offset,
    sd ``cast``) and Gaussian pixel noise (sd ``sigma``)."""
    rng = np.random.default_rng(seed)
    radius = blur_per_64px * image.shape[0] / 64
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)
    shift = rng.normal(0.0, cast, 3) if cast else 0.0
    noise = rng.normal(0.0, sigma, blurred.shape)
    return np.clip(np.round(blurred + shift + noise), 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def match(truth: list[np.ndarray], found: list[np.ndarray]) -> list[int | None]:
    """For each ground-truth mask, the index of its detection (best total IoU, one-to-one)."""
    table = np.array([[iou(t, f) for f in found] for t in truth]) if found else np.zeros((len(truth), 0))
    best, best_total = [None] * len(truth), 0.0
    slots = list(range(len(found))) + [None] * len(truth)
    for perm in itertools.permutations(slots, len(truth)):
        if any(p is not None and perm.count(p) > 1 for p in perm):
            continue
        total = sum(table[i, p] for i, p in enumerate(perm) if p is not None)
        if total > best_total:
            best, best_total = list(perm), total
    return [p if p is not None and table[i, p] > 0 else None for i, p in enumerate(best)]


def score_scene(scene: Scene, image: np.ndarray, masks: list[np.ndarray]) -> dict:
    analysis = analyse(image)
    dets = analysis.detections
    pairs = match(masks, [d.mask for d in dets])
    shape_ok, colour_ok, ious = [], [], []
    for obj, mask, j in zip(scene.objects, masks, pairs, strict=True):
        det = None if j is None else dets[j]
        shape_ok.append(det is not None and det.shape == obj.shape)
        colour_ok.append(det is not None and det.colour == obj.colour)
        ious.append(0.0 if det is None else iou(mask, det.mask))
    caption = score_caption(analysis, scene)
    return {
        "shape": shape_ok,
        "colour": colour_ok,
        "iou": ious,
        "background": analysis.background == scene.background,
        "count": len(dets) == len(scene.objects),
        "relation": caption["relation_ok"],
        "caption": caption["objects_ok"] and caption["background_ok"] is not False,
    }


def evaluate(n: int, size: int, degradation: str = "clean") -> dict:
    rows = []
    start = time.perf_counter()
    for i in range(n):
        scene = held_out_scene(i)
        image, masks = render(scene, size)
        if DEGRADATIONS[degradation]:
            image = degrade(image, NOISE_SEED + i, **DEGRADATIONS[degradation])
        rows.append(score_scene(scene, image, masks))
    per_obj = {k: [v for r in rows for v in r[k]] for k in ("shape", "colour", "iou")}
    relations = [r["relation"] for r in rows if r["relation"] is not None]
    return {
        "scenes": n,
        "objects": len(per_obj["shape"]),
        "shape": float(np.mean(per_obj["shape"])),
        "colour": float(np.mean(per_obj["colour"])),
        "background": float(np.mean([r["background"] for r in rows])),
        "mask_iou": float(np.mean(per_obj["iou"])),
        "count": float(np.mean([r["count"] for r in rows])),
        "relation": float(np.mean(relations)) if relations else float("nan"),
        "caption": float(np.mean([r["caption"] for r in rows])),
        "seconds": time.perf_counter() - start,
    }


def _present_rate(subject, photos, size: int, noisy: bool) -> float:
    hits = []
    for k, photo in enumerate(photos):
        image = np.asarray(photo if size == photo.width else photo.resize((size, size), Image.BOX))
        if noisy:
            image = degrade(image, NOISE_SEED + k)
        hits.append(subject_present(image, subject)[0])
    return float(np.mean(hits))


def subject_rates(n_photos: int) -> list[dict]:
    """Per subject: how often subject_present says yes on its photos, on unmarked look-alikes
    (same shape and colour, no pattern) and on the other subjects' photos."""
    photos = {s.name: render_subject_photos(s, n_photos, 512, seed=HELD_OUT_SEED) for s in SUBJECTS}
    plain = {
        s.name: render_subject_photos(s, n_photos, 512, seed=HELD_OUT_SEED, plain=True) for s in SUBJECTS
    }
    out = []
    for subject in SUBJECTS:
        others = [p for s in SUBJECTS if s is not subject for p in photos[s.name]]
        for size, noisy in ((512, False), (64, False), (64, True)):
            out.append(
                {
                    "subject": subject.name,
                    "setting": f"{size}px {'blur+noise' if noisy else 'clean'}",
                    "hit": _present_rate(subject, photos[subject.name], size, noisy),
                    "plain_fp": _present_rate(subject, plain[subject.name], size, noisy),
                    "other_fp": _present_rate(subject, others, size, noisy),
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="held-out scenes at 64 px")
    parser.add_argument("--n-512", type=int, default=100, help="held-out scenes at 512 px")
    parser.add_argument("--subject-photos", type=int, default=16, help="photos per subject (0: skip)")
    args = parser.parse_args(argv)
    settings = [(64, d, args.n) for d in DEGRADATIONS] + [(512, d, args.n_512) for d in DEGRADATIONS]
    cols = ("shape", "colour", "background", "mask_iou", "count", "relation", "caption")
    print(f"{'setting':<16}{'scenes':>7}{'objects':>8}" + "".join(f"{c:>11}" for c in cols) + f"{'s/img':>8}")
    for size, degradation, n in settings:
        if n <= 0:
            continue
        r = evaluate(n, size, degradation)
        name = f"{size}px {degradation}"
        print(
            f"{name:<16}{r['scenes']:>7}{r['objects']:>8}"
            + "".join(f"{r[c]:>11.4f}" for c in cols)
            + f"{r['seconds'] / n:>8.3f}",
            flush=True,
        )
    if args.subject_photos > 0:
        print(
            f"\nsubject_present ({args.subject_photos} photos each; plain = same shape+colour without markings)"
        )
        print(f"{'subject':<10}{'setting':<14}{'hit':>8}{'plain_fp':>10}{'other_fp':>10}")
        for r in subject_rates(args.subject_photos):
            print(
                f"{r['subject']:<10}{r['setting']:<14}{r['hit']:>8.3f}{r['plain_fp']:>10.3f}{r['other_fp']:>10.3f}"
            )


if __name__ == "__main__":
    main()
