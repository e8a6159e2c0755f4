"""Measure the shipped toy-world model against its bars; prints a table, writes JSON.

    python -m eval.toy_model_bars [--model resources/toy-world] [--single 200] [--pairs 100]

  * autoencoder reconstruction PSNR on held-out scenes, and whether the toy subjects' markings
    survive a round trip through it;
  * single-object captions: colour / shape / background accuracy (toy evaluator), 25 DDIM steps, CFG 7.5;
  * two-object captions: both colours right, both shapes right, relation right;
  * localisation of each shape (noun) token's 16×16 cross-attention (heads, layers and steps
    averaged, conditional branch): own/other object density ratio, in-mask fraction ÷ mask area,
    and the noun's share of all attention mass.
Scenes come from seeds the training never used (≥ HELD_OUT_SEED_BASE).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.toy import world
from engine.toy.evaluator import analyse
from engine.toy.scoring import score_caption
from engine.toy.train_toy import HELD_OUT_SEED_BASE

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "resources" / "toy-world"
RESULTS = Path(__file__).parent / "results"


def held_out_scenes(n: int, n_objects: int, offset: int) -> list:
    return [world.sample_scene(np.random.default_rng([HELD_OUT_SEED_BASE + offset, i]), n_objects) for i in range(n)]


def load_pipeline(model: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class MapAverager:
    """Controller for the attention processor: sums head-averaged maps of the conditional half."""

    def __init__(self):
        self.total = None
        self.count = 0

    def on_probs(self, layer, probs, batch, heads):
        maps = probs.view(batch, heads, probs.shape[1], probs.shape[2]).mean(1)
        conditional = maps[batch // 2 :] if batch % 2 == 0 else maps  # CFG puts unconditional first
        self.total = conditional.detach().float() if self.total is None else self.total + conditional.detach().float()
        self.count += 1
        return probs

    @property
    def mean(self):
        return (self.total / self.count).cpu().numpy()  # (B, 256, 77)


def generate(pipe, captions: list[str], seed: int, steps: int = 25, guidance: float = 7.5, batch: int = 50,
             capture: bool = False):
    import torch

    from engine.attention import processor as attention

    images, maps = [], []
    for start in range(0, len(captions), batch):
        chunk = captions[start : start + batch]
        generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
        averager = MapAverager()
        if capture:
            attention.install(pipe.unet, averager, attention.cross_attention_layers(pipe.unet, resolution=16))
        try:
            out = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np")
        finally:
            if capture:
                attention.uninstall(pipe.unet)
        images += [(img * 255).round().astype(np.uint8) for img in out.images]
        if capture:
            maps.append(averager.mean)
    return images, (np.concatenate(maps) if capture else None)


def vae_psnr(pipe, n: int = 200) -> float:
    import torch

    scenes = held_out_scenes(n, 0, offset=7)
    images = np.stack([world.render(scene, 64)[0] for scene in scenes])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((recon - x) ** 2).mean(dim=(1, 2, 3)).numpy()
    return float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10))))


def subject_markings_roundtrip(pipe, n: int = 32) -> dict:
    """Per toy subject: share of ``n`` rendered 64-px photos the evaluator recognises as the subject,
    as rendered and after one trip through the autoencoder (encode → posterior mean → decode).

    Personalisation decodes through this VAE, so a subject it cannot reconstruct cannot be learned.
    """
    import torch

    from engine.toy.scoring import subject_present
    from engine.toy.subjects import SUBJECTS, render_subject_photos

    out = {}
    for subject in SUBJECTS:
        photos = np.stack([np.asarray(p) for p in render_subject_photos(subject, n, 64, seed=7)])
        x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        decoded = ((recon + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        out[subject.name] = {
            "rendered": float(np.mean([subject_present(p, subject)[0] for p in photos])),
            "round_trip": float(np.mean([subject_present(p, subject)[0] for p in decoded])),
        }
    return out


def single_object_accuracy(pipe, n: int, seed: int = 0) -> dict:
    scenes = held_out_scenes(n, 1, offset=1)
    images, _ = generate(pipe, [s.caption for s in scenes], seed)
    colour = shape = bg = bg_n = 0
    for scene, image in zip(scenes, images, strict=True):
        result = score_caption(image, scene.caption)
        colour += bool(result.get("colour_ok"))
        shape += bool(result.get("shape_ok"))
        if scene.background in scene.caption:
            bg_n += 1
            bg += bool(result.get("background_ok"))
    return {"n": n, "colour": colour / n, "shape": shape / n, "background": bg / max(bg_n, 1), "background_n": bg_n}


def two_object_metrics(pipe, n: int, seed: int = 0) -> dict:
    scenes = held_out_scenes(n, 2, offset=2)
    tokenizer = pipe.tokenizer
    images, maps = generate(pipe, [s.caption for s in scenes], seed, capture=True)
    colours = shapes = relation = 0
    own_other, in_mask_ratio, noun_share = [], [], []
    for scene, image, attn in zip(scenes, images, maps, strict=True):
        result = score_caption(image, scene.caption)
        colours += bool(result.get("colours_ok"))
        shapes += bool(result.get("shapes_ok"))
        relation += bool(result.get("relation_ok"))
        detections = analyse(image).detections
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(scene.caption).input_ids)
        masks = []
        for obj in scene.objects:
            found = [d for d in detections if d.colour == obj.colour]
            masks.append(found[0].mask if found else None)
        if any(m is None for m in masks):
            continue  # localisation is only defined where both objects were drawn
        masks16 = [m.reshape(16, 4, 16, 4).mean(axis=(1, 3)).ravel() for m in masks]
        used = set()
        for k, obj in enumerate(scene.objects):
            positions = [i for i, t in enumerate(tokens) if t == obj.shape + "</w>" and i not in used]
            if not positions:
                continue
            position = positions[0]
            used.add(position)
            p = attn[:, position]
            own, other = masks16[k], masks16[1 - k]
            own_density = (p * own).sum() / max(own.sum(), 1e-6)
            other_density = (p * other).sum() / max(other.sum(), 1e-6)
            own_other.append(own_density / max(other_density, 1e-9))
            in_mask_ratio.append(((p * own).sum() / max(p.sum(), 1e-9)) / max(own.mean(), 1e-6))
            noun_share.append(p.sum() / attn.sum())
    return {
        "n": n,
        "both_colours": colours / n,
        "both_shapes": shapes / n,
        "relation": relation / n,
        "localisation_n": len(own_other),
        "own_over_other_median": float(np.median(own_other)) if own_other else None,
        "in_mask_over_area_median": float(np.median(in_mask_ratio)) if in_mask_ratio else None,
        "noun_attention_share_mean": float(np.mean(noun_share)) if noun_share else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "toy_model_bars.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    results = {"model": str(args.model), "psnr_db": vae_psnr(pipe), "subject_markings": subject_markings_roundtrip(pipe)}
    results["single"] = single_object_accuracy(pipe, args.single)
    results["pairs"] = two_object_metrics(pipe, args.pairs)
    results["seconds"] = round(time.perf_counter() - started, 1)
    s, p = results["single"], results["pairs"]
    rows = [
        ("autoencoder PSNR, 200 held-out scenes", f"{results['psnr_db']:.1f} dB", "≥ 28 dB"),
        *[(f"{name} recognised after a VAE round trip (32 photos; as rendered: {m['rendered']:.0%})", f"{m['round_trip']:.0%}",
           "reported") for name, m in results["subject_markings"].items()],
        (f"single-object colour accuracy ({s['n']} captions)", f"{s['colour']:.0%}", "≥ 90%"),
        ("single-object shape accuracy", f"{s['shape']:.0%}", "≥ 80%"),
        (f"single-object background accuracy ({s['background_n']} captions naming one)", f"{s['background']:.0%}", "≥ 85%"),
        (f"two-object: both colours right ({p['n']} captions)", f"{p['both_colours']:.0%}", "≥ 70%"),
        ("two-object: both shapes right", f"{p['both_shapes']:.0%}", "reported"),
        ("two-object: relation right", f"{p['relation']:.0%}", "reported"),
        (f"noun attention own/other density, median of {p['localisation_n']}", f"{p['own_over_other_median']:.2f}×", "≥ 2×"),
        ("noun in-mask fraction ÷ mask area, median", f"{p['in_mask_over_area_median']:.2f}×", "≥ 2×"),
        ("noun share of all attention mass, mean", f"{p['noun_attention_share_mean']:.1%}", "reported"),
    ]
    print("| measurement | value | bar |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\n{results['seconds']} s; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
