"""Train a tiny CLIP for the toy world, so CLIP-T / CLIP-I can be measured where no real CLIP can be
downloaded (tests, CI, offline demos).

    python -m engine.toy.train_clip                      # ≈ 8 min on 2 CPU cores → resources/toy-clip
    python -m engine.toy.train_clip --max-minutes 1 --out /tmp/toy-clip

Contrastive (InfoNCE) training of a transformers ``CLIPModel`` built from a config (a ViT with 8×8
patches at 64×64, and a text transformer reading the toy model's own tokenizer) on rendered
scenes and their captions. Captions repeat across scenes ("a red star"), so the targets are soft:
every image in a batch whose caption is identical counts as a positive. Seeded: the same command
gives the same weights on the same machine (thread scheduling aside).

The output folder is what ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained`` read
(config, safetensors weights, tokenizer, image processor), plus ``toy_clip.json``: the config, the
training time and the held-out measurements (own caption vs. a mismatched one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.toy import world

log = logging.getLogger("s2s.toy.clip")

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "resources" / "toy-world" / "tokenizer"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipTrainConfig:
    seed: int = 0
    n_scenes: int = 10000
    image_size: int = 64
    patch_size: int = 8
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    vocab_size: int = 1024  # the toy tokenizer's 618 tokens and room, like the toy text encoder
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    steps: int = 1500
    max_minutes: float = 6.0  # 0: no limit; else stop early (the schedule is fitted to the budget)
    eval_scenes: int = 200
    eval_seed: int = 10_000  # held-out scenes: another seed than the training set


def build_model(config: ClipTrainConfig, tokenizer):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(config.seed)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    clip_config = CLIPConfig(
        text_config=dict(vocab_size=config.vocab_size, hidden_size=config.hidden, intermediate_size=4 * config.hidden,
                         num_hidden_layers=config.layers, num_attention_heads=config.heads,
                         max_position_embeddings=tokenizer.model_max_length, **ids),
        vision_config=dict(hidden_size=config.hidden, intermediate_size=4 * config.hidden,
                           num_hidden_layers=config.layers, num_attention_heads=config.heads,
                           image_size=config.image_size, patch_size=config.patch_size),
        projection_dim=config.projection_dim,
    )
    return CLIPModel(clip_config)


def image_processor(config: ClipTrainConfig):
    from transformers import CLIPImageProcessor

    size = config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def pixels(images_uint8: np.ndarray):
    """(N, H, W, 3) uint8 → normalised (N, 3, H, W) float: what the image processor makes of a
    64×64 image (its resize and crop are identities at that size)."""
    import torch

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(model, pixel_values, input_ids, attention_mask, same_caption):
    """Symmetric InfoNCE with soft targets: every identical caption in the batch is a positive."""
    import torch.nn.functional as F

    out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    targets = same_caption / same_caption.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(out.logits_per_image, targets) + F.cross_entropy(out.logits_per_text, targets))


def train(config: ClipTrainConfig, tokenizer, data: dict, device: str = "cpu"):
    import torch

    model = build_model(config, tokenizer).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    captions = data["captions"]
    unique = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([unique[c] for c in captions])
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    deadline = started + config.max_minutes * 60 if config.max_minutes else math.inf
    total, step, losses = config.steps, 0, []
    while step < total:
        lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.choice(len(captions), size=config.batch, replace=False)
        tokens = tokenizer([captions[i] for i in idx], padding="longest", return_tensors="pt")
        ids = caption_ids[idx]
        same = (ids[:, None] == ids[None, :]).float().to(device)
        loss = contrastive_loss(model, pixels(data["images"][idx]).to(device), tokens["input_ids"].to(device),
                                tokens["attention_mask"].to(device), same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # CLIP's own cap on the temperature
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        step += 1
        if step == 20 and math.isfinite(deadline):  # fit the schedule to the time budget
            per_step = (time.perf_counter() - started) / step
            total = min(total, max(step + 1, int((deadline - started) / per_step)))
        if step % 100 == 0 or step == total:
            log.info("step %d/%d loss %.3f (mean of last 100 %.3f) lr %.2e %.0fs", step, total, losses[-1],
                     float(np.mean(losses[-100:])), lr, time.perf_counter() - started)
    return model.eval(), {"steps": step, "seconds": round(time.perf_counter() - started, 1),
                          "final_loss": round(float(np.mean(losses[-50:])), 4)}


# ------------------------------------------------------------------------------------ measuring


def _swap(scene: world.Scene, what: str, rng: np.random.Generator) -> str | None:
    """The scene's caption with the first object's colour or shape replaced by another one."""
    obj = scene.objects[0]
    words = scene.caption.split()
    pool = [c for c in world.COLOURS if c != obj.colour] if what == "colour" else [
        s for s in world.SHAPES if s != obj.shape]
    old = obj.colour if what == "colour" else obj.shape
    for i, w in enumerate(words):
        if w == old and (what == "shape" or (i + 1 < len(words) and words[i + 1] == obj.shape)):
            words[i] = pool[int(rng.integers(len(pool)))]
            return " ".join(words)
    return None


def measure(folder: Path, n: int = 200, seed: int = 10_000) -> dict:
    """Held-out scenes, scored through engine.metrics exactly as the evaluation table does: for each
    image, CLIP-T with its own caption vs. a mismatched one (another scene's different caption; the
    same caption with the colour or the shape of the first object changed)."""
    from PIL import Image

    from engine import metrics

    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    images = [Image.fromarray(world.render(s, 64)[0]) for s in scenes]
    captions = [s.caption for s in scenes]
    clip = metrics.FeatureModels({"clip": str(folder)}).clip()
    img = clip.image_embeddings(images).double()

    def scores(texts):
        return (100 * (img * clip.text_embeddings(texts).double()).sum(dim=1).clamp(min=0)).numpy()

    own = scores(captions)
    report = {"n": n, "clip_t_own": round(float(own.mean()), 3),
              "clip_t_own_via_metrics": round(metrics.clip_t(clip, images, captions), 3)}
    mismatched = []
    for i in range(n):
        j = (i + 1 + int(rng.integers(n - 1))) % n
        while captions[j] == captions[i]:
            j = (j + 1) % n
        mismatched.append(captions[j])
    other = scores(mismatched)
    report["other_caption"] = {"clip_t": round(float(other.mean()), 3),
                               "own_higher": round(float((own > other).mean()), 4)}
    for what in ("colour", "shape"):
        swapped = [_swap(s, what, rng) for s in scenes]
        keep = [i for i, c in enumerate(swapped) if c is not None]
        value = scores([swapped[i] for i in keep])
        report[f"{what}_swapped"] = {"n": len(keep), "clip_t": round(float(value.mean()), 3),
                                     "own_higher": round(float((own[keep] > value).mean()), 4)}
    sims = (img @ clip.text_embeddings(captions).double().T).numpy()
    # retrieval: the own caption ranks first among all n (ties with identical captions count as hits)
    best = sims.argmax(axis=1)
    report["caption_retrieval_top1"] = round(float(np.mean([captions[b] == captions[i] for i, b in enumerate(best)])), 4)
    return report


# ------------------------------------------------------------------------------------ main


def export(model, tokenizer, config: ClipTrainConfig, out: Path, stats: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    image_processor(config).save_pretrained(out)
    (out / "toy_clip.json").write_text(json.dumps({"config": dataclasses.asdict(config), **stats}, indent=2) + "\n",
                                       encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train a tiny CLIP on toy-world scenes and captions.")
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "toy-clip")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--scenes", type=int, default=None, help="training scenes to render")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = ClipTrainConfig()
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    if args.steps is not None:
        config.steps = args.steps
    if args.scenes is not None:
        config.n_scenes = args.scenes

    import torch
    from transformers import AutoTokenizer

    from engine.toy.train_data import build_dataset

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    started = time.perf_counter()
    data = build_dataset(config.n_scenes, config.seed)
    log.info("rendered %d scenes in %.1fs", config.n_scenes, time.perf_counter() - started)
    model, stats = train(config, tokenizer, data, args.device)
    stats["device"] = args.device
    stats["torch_threads"] = torch.get_num_threads()
    export(model.cpu(), tokenizer, config, args.out, stats)
    stats["held_out"] = measure(args.out, config.eval_scenes, config.eval_seed)
    export(model, tokenizer, config, args.out, stats)
    log.info("held-out: %s", json.dumps(stats["held_out"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
