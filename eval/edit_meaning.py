"""Prompt-to-Prompt meaning checks on the shipped toy-world model: do edits, heatmaps, reweighting
and inversion do what they claim? Used by tests/engine/test_edit_meaning.py (small n) and printed as
a table by ``python -m eval.edit_meaning [--n 8]`` (the README's numbers).

Every check runs the real edit job (engine.edit.run_edit_job) on the real toy model and scores the
pictures with the toy evaluator, which knows nothing about the edit.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.edit import psnr
from engine.toy import world
from engine.toy.evaluator import analyse

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "resources" / "toy-world"
STEPS = 25


def quiet_context(params: dict):
    """A real job context whose events go nowhere, for running a job in-process."""
    from engine.jobs import Job, JobContext

    return JobContext(Job("edit", params), lambda event: None)


class EditSession:
    """The toy model loaded once, with the engine state that keeps edit caches between jobs."""

    def __init__(self, model: Path = DEFAULT_MODEL, out_dir: Path | None = None):
        from engine.models.registry import resolve_source
        from engine.server import EngineState

        self.state = EngineState()
        self.state.model_cache().load(resolve_source({"source": str(model), "name": "toy"}), device="cpu")
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="s2s-edit-"))
        self.count = 0

    @property
    def loaded(self):
        return self.state.model_cache().current

    def edit(self, **params) -> dict:
        from engine.edit import run_edit_job
        from engine.protocol import validate_job

        self.count += 1
        params = validate_job("edit", {"out_dir": str(self.out_dir), "steps": STEPS, "name": f"e{self.count}",
                                       **params})
        return run_edit_job(params, quiet_context(params), self.state)


def rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def find(image: np.ndarray, colour: str):
    found = [d for d in analyse(image).detections if d.colour == colour]
    return max(found, key=lambda d: d.area_fraction) if found else None


def word_swap(session: EditSession, seeds: list[int]) -> dict:
    """"a red star on a blue background" → "a green star …" with local blend on "star": the star
    turns green, keeps its outline, the rest of the picture stays."""
    rows = []
    for seed in seeds:
        result = session.edit(source_prompt="a red star on a blue background",
                              target_prompt="a green star on a blue background", seed=seed, blend_words=["star"])
        before, after = rgb(result["original"]), rgb(result["edited"])
        red, green = find(before, "red"), find(after, "green")
        if red is None:
            continue  # the base model did not draw the source; nothing to judge
        if green is None:
            rows.append({"seed": seed, "green": False, "iou": 0.0, "psnr_outside": psnr(before, after)})
            continue
        union = red.mask | green.mask
        rows.append({"seed": seed, "green": True, "still_red": find(after, "red") is not None,
                     "iou": float((red.mask & green.mask).sum() / union.sum()),
                     "psnr_outside": psnr(before, after, ~union)})
    return {"n": len(rows), "green_rate": np.mean([r["green"] for r in rows]),
            "iou_median": float(np.median([r["iou"] for r in rows])),
            "psnr_outside_median": float(np.median([r["psnr_outside"] for r in rows])), "rows": rows}


def heatmap_localisation(session: EditSession, n: int) -> dict:
    """Two-object pictures: each shape word's heatmap (the .npz the GUI draws, steps and layers
    averaged at the finest resolution) has ≥ 2× the density on its own object as on the other."""
    from engine.attention.heatmaps import read_heatmaps

    ratios = []
    rng = np.random.default_rng(7)
    while len(ratios) < 2 * n and session.count < 6 * n:
        scene = world.sample_scene(rng, 2)
        a, b = scene.objects
        if a.shape == b.shape or a.colour == b.colour:
            continue
        result = session.edit(source_prompt=scene.caption, seed=int(rng.integers(1 << 16)))
        image = rgb(result["original"])
        masks = [find(image, obj.colour) for obj in scene.objects]
        if any(m is None for m in masks):
            continue
        meta, arrays = read_heatmaps(Path(result["heatmaps"]))
        res = max(meta["resolutions"])
        maps = arrays[f"source_{res}"].astype(np.float32).mean(axis=(0, 1))  # (tokens, h, w)
        h = maps.shape[1]
        for k, obj in enumerate(scene.objects):
            positions = [w["tokens"][0] for w in meta["prompts"]["source"]["words"] if w["word"] == obj.shape]
            own, other = (m.mask.reshape(h, image.shape[0] // h, h, -1).mean(axis=(1, 3)) for m in
                          (masks[k], masks[1 - k]))
            p = maps[positions[0]]
            ratios.append(float(((p * own).sum() / own.sum()) / max((p * other).sum() / other.sum(), 1e-9)))
    return {"n": len(ratios), "own_over_other_median": float(np.median(ratios)),
            "own_over_other_min": float(np.min(ratios)), "share_at_least_2x": float(np.mean(np.array(ratios) >= 2))}


def identity(session: EditSession, seeds: list[int]) -> dict:
    """Target = source and factor 1.0 (the full two-branch edit path) against the plain pipeline."""
    from engine.generate import GenerationSettings, generate_images

    worst = 0
    for seed in seeds:
        prompt = "a yellow heart on a green background"
        settings = GenerationSettings(prompt, "", seed, STEPS, 7.5, 64, 64, "ddim", "toy")
        [plain] = generate_images(session.loaded, settings, 1)
        result = session.edit(source_prompt=prompt, seed=seed, reweight={"yellow": 1.0})
        assert result["mode"] == "same"
        worst = max(worst, int(np.abs(rgb(result["edited"]).astype(int) - np.asarray(plain).astype(int)).max()))
    return {"n": len(seeds), "max_abs_pixel_difference": worst}


def saturation(image: np.ndarray, mask: np.ndarray) -> float:
    pixels = image[mask].astype(np.float64) / 255.0
    return float(np.mean([colorsys.rgb_to_hsv(*p)[1] for p in pixels]))


def reweight_saturation(session: EditSession, seeds: list[int], factors=(-2.0, 0.0, 0.5, 1.0, 2.0, 3.0)) -> dict:
    """The colour word's slider against the object's colour saturation (mask of the unedited
    object). The toy world draws each colour word in one palette colour, so there is no "redder
    than red" for a factor above 1 to reach; below 1 the colour must fade in order."""
    per_factor = {f: [] for f in factors}
    for seed in seeds:
        for colour, shape in (("red", "circle"), ("green", "square"), ("orange", "heart")):
            prompt = f"a {colour} {shape} on a white background"
            base = None
            values = {}
            for factor in factors:
                result = session.edit(source_prompt=prompt, seed=seed, reweight={colour: factor})
                if base is None:
                    base = find(rgb(result["original"]), colour)
                    if base is None:
                        break
                values[factor] = saturation(rgb(result["edited"]), base.mask)
            if base is not None:
                for factor, value in values.items():
                    per_factor[factor].append(value)
    below = [f for f in factors if f <= 1.0]
    ordered = np.all([np.diff([per_factor[f][i] for f in below]) > 0 for i in range(len(per_factor[1.0]))], axis=1)
    return {"n": len(per_factor[1.0]), **{f"saturation_at_{f:g}": float(np.mean(v)) for f, v in per_factor.items()},
            "fades_in_order_share": float(np.mean(ordered))}


def inversion(session: EditSession, n: int, nulltext_images: int = 2) -> dict:
    """Rendered toy scenes (not generated ones) inverted and reconstructed at guidance 7.5; the toy
    autoencoder's own round trip is the ceiling any inversion can reach."""
    rng = np.random.default_rng(11)
    rows = {m: [] for m in ("direct", "npi", "ddim", "nulltext", "vae")}
    for k in range(n):
        scene = world.sample_scene(rng)
        pixels, _ = world.render(scene, 64)
        path = session.out_dir / f"scene{k}.png"
        Image.fromarray(pixels).save(path)
        for method in ("direct", "npi", "ddim") + (("nulltext",) if k < nulltext_images else ()):
            result = session.edit(source_prompt=scene.caption, image=str(path), invert=method, heatmaps=False)
            rows[method].append(result["reconstruction_psnr"])
        rows["vae"].append(vae_round_trip_psnr(session, pixels))
    return {"n": n, **{f"{m}_psnr_mean": float(np.mean(v)) for m, v in rows.items() if v},
            "direct_minus_ddim_min": float(np.min(np.array(rows["direct"]) - np.array(rows["ddim"])))}


def vae_round_trip_psnr(session: EditSession, pixels: np.ndarray) -> float:
    import torch

    pipe = session.loaded.pipeline
    with torch.no_grad():
        x = pipe.image_processor.preprocess(Image.fromarray(pixels))
        latent = pipe.vae.encode(x).latent_dist.mean
        out = pipe.image_processor.postprocess(pipe.vae.decode(latent).sample, output_type="np")[0]
    return psnr(pixels, (out * 255).round().astype(np.uint8))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    session = EditSession()
    started = time.perf_counter()
    report = {
        "word_swap": word_swap(session, list(range(args.n))),
        "heatmaps": heatmap_localisation(session, args.n),
        "identity": identity(session, list(range(min(args.n, 4)))),
        "reweight": reweight_saturation(session, list(range(args.n))),
        "inversion": inversion(session, args.n),
        "seconds": round(time.perf_counter() - started, 1),
    }
    for name, value in report.items():
        if isinstance(value, dict):
            print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in value.items() if k != "rows"})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
