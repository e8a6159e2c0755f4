"""Train the toy-world model from scratch: VAE first, then text encoder + UNet.

    python -m engine.toy.train_toy --preset cpu  --out resources/toy-world   # ≈ 2 h on 2 CPU cores
    python -m engine.toy.train_toy --preset gpu  --out resources/toy-world   # minutes on a CUDA GPU

Resumable: checkpoints go to --work-dir (outside git) every few hundred steps; rerunning the same
command continues. Everything is seeded; the dataset is rendered once and cached in the work dir.

The shipped model was made in stages, each a warm start (``--init-from``) of the one before; every
stage's command and config is recorded in ``resources/toy-world/toy_world.json``:
``gpu`` (from scratch) → ``finetune`` (attention loss) → ``vae-markings`` (the VAE alone learns
dots, stripes and faces, anchored so the UNet's latents stay put) → ``background`` (background
words). A from-scratch ``cpu``/``gpu`` run already mixes marked scenes into its VAE data.

Attention supervision: real Stable Diffusion localises nouns by itself from billions of captions; a
model trained on a few thousand synthetic ones does not (its maps stay flat). The toy model exists
to be an oracle for Prompt-to-Prompt and heatmaps, so an auxiliary loss on the 16×16
cross-attention of each object's colour and shape tokens (up inside the object's ground-truth mask,
down outside) gives it the property on purpose. It is switched off at high noise (t ≥ 700) where
the image has no layout yet.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.toy.model import IMAGE_SIZE, build_components
from engine.toy.train_data import load_or_build_dataset

log = logging.getLogger("s2s.toy.train")


@dataclass
class ToyTrainConfig:
    seed: int = 0
    n_scenes: int = 20000
    vae_steps: int = 3000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    # Share of each VAE batch drawn from marked scenes (dots, stripes, faces, colours outside the
    # palette): personalisation subjects carry such markings and the autoencoder must keep them.
    vae_marked_share: float = 0.5
    # Train the VAE on random crops of this size (0: whole images). It is fully convolutional, so
    # crops teach the same thing at a quarter of the cost on a CPU.
    vae_crop: int = 0
    # Warm start only: keep the encoder's posterior means of plain world scenes this close to the
    # starting VAE's (weight on their MSE), so the UNet trained on those latents stays valid.
    vae_anchor_weight: float = 0.0
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 8e-4
    min_snr_gamma: float = 5.0
    caption_dropout: float = 0.1
    attn_weight: float = 0.1
    attn_max_timestep: int = 700
    # 0: push each token's mean probability up inside its mask (unbounded; lets one token of an
    # object, usually the colour, take all the attention and the shape token's collapse to ~0).
    # > 0: lift every token's mean inside probability to this level (in log space), so the colour
    # and shape tokens of one object share the object instead of one of them vanishing.
    attn_inside_target: float = 0.0
    # Share of captions that do not name the background which get " on a <bg> background" added
    # (the model otherwise paints a plausible but wrong background: a held-out 75% in stage 2).
    background_caption_share: float = 0.0
    # Share of each batch with its timestep drawn from the noisier half, where layout and
    # background are decided.
    high_noise_share: float = 0.0
    checkpoint_every: int = 500
    max_minutes: float = 0.0  # 0: no limit; else stop (and export) when the budget is spent


PRESETS = {
    # Sized for a 2-core CPU: the time budget shrinks the step counts to end within 2 h (measured
    # ≈ 1.2 s/step at batch 32 on 2 cores; fewer samples than the GPU recipe, so a weaker model).
    "cpu": ToyTrainConfig(max_minutes=115),
    "gpu": ToyTrainConfig(n_scenes=60000, vae_steps=6000, vae_batch=128, unet_steps=16000, unet_batch=128),
    # Stage 2 of the shipped model: warm start (--init-from), balanced attention targets.
    "finetune": ToyTrainConfig(n_scenes=8000, vae_steps=0, unet_steps=1200, unet_batch=32, unet_lr=2e-4,
                               attn_weight=0.05, attn_inside_target=0.3, checkpoint_every=100),
    # Stage 3 of the shipped model: the VAE alone learns markings (UNet and text encoder untouched;
    # the anchor keeps the plain world's latents where the UNet expects them).
    "vae-markings": ToyTrainConfig(n_scenes=6000, vae_steps=3000, vae_batch=32, vae_lr=5e-4, vae_crop=32,
                                   vae_anchor_weight=0.2, unet_steps=0, checkpoint_every=250),
    # Stage 4: background words, where stage 2 was weakest (warm start; same attention loss as stage 2).
    "background": ToyTrainConfig(n_scenes=8000, vae_steps=0, unet_steps=1200, unet_batch=32, unet_lr=1e-4,
                                 attn_weight=0.05, attn_inside_target=0.3, background_caption_share=0.5,
                                 high_noise_share=0.5, checkpoint_every=100),
    "smoke": ToyTrainConfig(n_scenes=256, vae_steps=20, vae_batch=16, unet_steps=20, unet_batch=16, checkpoint_every=10),
}

# Training scenes use seeds below this; evaluation scenes use seeds above it.
HELD_OUT_SEED_BASE = 1_000_000


# ------------------------------------------------------------------------------------ training


class AttentionProbeStore:
    """Controller for the attention processor: keeps head-averaged 16×16 cross-attention probs."""

    def __init__(self):
        self.maps: list = []

    def on_probs(self, layer, probs, batch, heads):
        self.maps.append(probs.view(batch, heads, probs.shape[1], probs.shape[2]).mean(1))
        return probs


def attention_loss(maps: list, masks16, words, keep, inside_target: float = 0.0):
    """Per object token: share of its attention outside its mask + (mean prob outside − inside).

    maps: list of (B, 256, 77); masks16: (B, 2, 16, 16); words: (B, 2, 2) word indices (-1: none);
    keep: (B,) bool, samples whose caption was kept and whose timestep is below the cut-off.
    """
    import torch

    probs = torch.stack(maps).mean(0)  # (B, 256, 77)
    total, count = probs.new_zeros(()), 0
    flat_masks = masks16.flatten(2)  # (B, 2, 256)
    for k in range(2):
        for w in range(2):
            word = words[:, k, w].long()
            valid = (word >= 0) & keep
            if not valid.any():
                continue
            token = (word + 1).clamp(min=0)  # +1: the start-of-text token comes first
            p = probs.gather(2, token.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(2)  # (B, 256)
            m = flat_masks[:, k]
            inside = (p * m).sum(1) / m.sum(1).clamp(min=1e-6)
            outside = (p * (1 - m)).sum(1) / (1 - m).sum(1).clamp(min=1e-6)
            share_out = (p * (1 - m)).sum(1) / p.sum(1).clamp(min=1e-6)
            if inside_target > 0:
                # In log space: a token whose attention has collapsed (p ≈ 0) still gets a gradient
                # (d log p / d logit = 1 - p), where a hinge on p itself would not (dp/dlogit ≈ 0).
                per_sample = share_out + torch.relu(math.log(inside_target) - torch.log(inside + 1e-8))
            else:
                per_sample = share_out + (outside - inside)
            total = total + per_sample[valid].sum()
            count += int(valid.sum())
    return total / max(count, 1)


def fit_steps_to_budget(step: int, total: int, step_started: float, first_step: int, deadline: float) -> int:
    """With a time budget, shrink the step count (and so the cosine schedule) to what fits."""
    if deadline == float("inf") or step - first_step < 30:
        return total
    per_step = (time.time() - step_started) / (step - first_step)
    fits = step + int(0.95 * (deadline - time.time()) / per_step)
    return max(step + 1, min(total, fits))


def train_vae(vae, data, config, device, work_dir, deadline, anchor_vae=None) -> int:
    """L1 + MSE reconstruction of world and marked scenes; with ``anchor_vae``, plus the MSE of the
    plain scenes' (scaled) posterior means against that frozen VAE's."""
    import torch

    ckpt = work_dir / "vae.pt"
    start = 0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        start = int(state["step"])
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
    marked = torch.from_numpy(data["marked_images"]).permute(0, 3, 1, 2).contiguous()
    n_marked = int(round(config.vae_batch * config.vae_marked_share)) if len(marked) else 0
    n_plain = config.vae_batch - n_marked
    scale = vae.config.scaling_factor
    rng = torch.Generator().manual_seed(config.seed + 1)
    vae.train()
    total = config.vae_steps
    loop_started = time.time()
    step = start
    while step < total:
        if step - start == 30:
            total = fit_steps_to_budget(step, total, loop_started, start, deadline)
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        index = torch.randint(0, len(images), (n_plain,), generator=rng)
        x = images[index]
        if n_marked:
            x = torch.cat([x, marked[torch.randint(0, len(marked), (n_marked,), generator=rng)]])
        if config.vae_crop:  # offsets on the latent grid (factor 4), so crops encode like whole images
            oy, ox = (torch.randint(0, (IMAGE_SIZE - config.vae_crop) // 4 + 1, (2,), generator=rng) * 4).tolist()
            x = x[:, :, oy : oy + config.vae_crop, ox : ox + config.vae_crop]
        x = (x.to(device).float() / 127.5) - 1.0
        posterior = vae.encode(x).latent_dist
        # A warm start decodes the posterior mean, which is what the UNet's training latents were.
        recon = vae.decode(posterior.mode() if anchor_vae is not None else posterior.sample()).sample
        loss = torch.nn.functional.l1_loss(recon, x) + torch.nn.functional.mse_loss(recon, x)
        loss = loss + 1e-6 * posterior.kl().mean()
        if anchor_vae is not None and config.vae_anchor_weight > 0:
            with torch.no_grad():
                target = anchor_vae.encode(x[:n_plain]).latent_dist.mode()
            drift = torch.nn.functional.mse_loss(posterior.mode()[:n_plain] * scale, target * scale)
            loss = loss + config.vae_anchor_weight * drift
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == total - 1:
            psnr = 10 * math.log10(4.0 / max(torch.nn.functional.mse_loss(recon, x).item(), 1e-10))
            log.info("vae step %d/%d loss %.4f psnr %.2f dB", step, total, loss.item(), psnr)
        step += 1
        if step % config.checkpoint_every == 0 or step == total or time.time() > deadline:
            torch.save({"model": vae.state_dict(), "optim": optimizer.state_dict(), "step": step}, ckpt)
            if time.time() > deadline:
                log.warning("time budget spent during the VAE stage at step %d", step)
                break
    vae.eval()
    return step  # the steps actually run (a time budget may shrink them)


def encode_latents(vae, data, device, batch: int = 256, keep_scaling: bool = False):
    import torch

    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch].to(device).float() / 127.5 - 1.0
            out.append(vae.encode(x).latent_dist.mode())
    latents = torch.cat(out)
    if not keep_scaling:  # a warm start keeps the scale its UNet was trained with
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return latents * vae.config.scaling_factor


def train_unet(unet, text_encoder, tokenizer, scheduler, latents, data, config, device, work_dir, deadline) -> int:
    import torch

    from engine.attention import processor as attention

    ckpt = work_dir / "unet.pt"
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=1e-2)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optim"])
        start = int(state["step"])
    # Everything per-sample lives on the device: batches are gathered there, no host round trips.
    ids = tokenizer(data["captions"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids = ids.to(device)
    # Appending keeps every earlier word's position, so the attention targets (`words`) still hold.
    named = [c if "background" in c else f"{c} on a {bg} background" for c, bg in zip(data["captions"], data["backgrounds"], strict=True)]
    named_ids = tokenizer(named, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(device)
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0].to(device)
    masks16 = torch.from_numpy(data["masks16"]).to(device)
    words = torch.from_numpy(data["words"].astype(np.int64)).to(device)
    alphas = scheduler.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    store = AttentionProbeStore()
    attention.install(unet, store, attention.cross_attention_layers(unet, resolution=16))
    rng = torch.Generator(device).manual_seed(config.seed + 2)
    unet.train()
    text_encoder.train()
    warmup = 200
    total = config.unet_steps
    loop_started = time.time()
    done = start
    for step in range(start, 10**9):
        if step >= total:
            break
        if step - start == 30:
            total = fit_steps_to_budget(step, total, loop_started, start, deadline)
        lr = config.unet_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(latents), (config.unet_batch,), generator=rng, device=device)
        x0 = latents[index]
        dropped = torch.rand(config.unet_batch, generator=rng, device=device) < config.caption_dropout
        batch_ids = ids[index]
        if config.background_caption_share > 0:
            name_it = torch.rand(config.unet_batch, generator=rng, device=device) < config.background_caption_share
            batch_ids = torch.where(name_it[:, None], named_ids[index], batch_ids)
        batch_ids = torch.where(dropped[:, None], empty[None, :], batch_ids)
        noise = torch.randn(x0.shape, generator=rng, device=device)
        steps_total = scheduler.config.num_train_timesteps
        t = torch.randint(0, steps_total, (config.unet_batch,), generator=rng, device=device)
        if config.high_noise_share > 0:
            noisy_half = torch.randint(steps_total // 2, steps_total, (config.unet_batch,), generator=rng, device=device)
            pick = torch.rand(config.unet_batch, generator=rng, device=device) < config.high_noise_share
            t = torch.where(pick, noisy_half, t)
        noisy = scheduler.add_noise(x0, noise, t)
        store.maps.clear()
        context = text_encoder(batch_ids)[0]
        pred = unet(noisy, t, context).sample
        per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        weight = torch.clamp(snr[t], max=config.min_snr_gamma) / snr[t]  # Min-SNR-γ for ε-prediction
        loss = mse = (per_sample * weight).mean()
        attn = torch.zeros((), device=device)
        if config.attn_weight > 0:
            keep = ~dropped & (t < config.attn_max_timestep)
            attn = attention_loss(store.maps, masks16[index], words[index], keep, config.attn_inside_target)
            loss = loss + config.attn_weight * attn
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 100 == 0 or step == total - 1:
            log.info("unet step %d/%d mse %.4f attn %.4f lr %.2e", step, total, mse.item(), attn.item(), lr)
        done = step + 1
        out_of_time = time.time() > deadline
        if (step + 1) % config.checkpoint_every == 0 or step == total - 1 or out_of_time:
            torch.save(
                {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "optim": optimizer.state_dict(), "step": step + 1},
                ckpt,
            )
            if out_of_time:
                log.warning("time budget spent during the UNet stage at step %d", step + 1)
                break
    attention.uninstall(unet)
    unet.eval()
    text_encoder.eval()
    return done


def export(vae, unet, text_encoder, tokenizer, scheduler, out: Path, config: ToyTrainConfig, stats: dict,
           earlier: dict | None = None) -> None:
    """Save the pipeline; ``toy_world.json`` lists every stage, a warm start's ``earlier`` ones first."""
    from engine.models.tiny import assemble_pipeline

    pipe = assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    pipe.save_pretrained(out, safe_serialization=True)
    this = {"config": dataclasses.asdict(config), **stats}
    record = this
    if earlier is not None:
        stages = earlier.get("stages") or [earlier]
        record = {"what": earlier.get("what", "toy-world demo model"), "stages": [*stages, this]}
    (out / "toy_world.json").write_text(json.dumps(record, indent=2), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the toy-world model (VAE, then text encoder + UNet).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("resources/toy-world"))
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "s2s-toy-train")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--init-from", type=Path, help="warm start from an exported toy-world folder (skips the VAE stage)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from engine import devices

    config = dataclasses.replace(PRESETS[args.preset])
    for item in args.set:
        key, value = item.split("=", 1)
        field_type = type(getattr(config, key))
        config = dataclasses.replace(config, **{key: field_type(value)})
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    device = devices.select_device(args.device)
    work_dir = args.work_dir / args.preset
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + config.max_minutes * 60 if config.max_minutes else float("inf")
    torch.manual_seed(config.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = load_or_build_dataset(work_dir, config)
    vae, unet, text_encoder, tokenizer, scheduler = build_components(seed=config.seed)
    if args.init_from:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        vae = AutoencoderKL.from_pretrained(args.init_from / "vae")
        unet = UNet2DConditionModel.from_pretrained(args.init_from / "unet")
        text_encoder = CLIPTextModel.from_pretrained(args.init_from / "text_encoder")
        if config.vae_steps and not config.vae_anchor_weight:
            # An unanchored VAE would move the latent space out from under the warm-started UNet.
            config = dataclasses.replace(config, vae_steps=0)
    anchor_vae = None
    if args.init_from and config.vae_steps:
        anchor_vae = copy.deepcopy(vae).requires_grad_(False).eval().to(device)
    vae, unet, text_encoder = vae.to(device), unet.to(device), text_encoder.to(device)
    t0 = time.time()
    vae_deadline = started + 0.25 * (deadline - started) if config.max_minutes and config.unet_steps else deadline
    vae_steps_run = train_vae(vae, data, config, device, work_dir, vae_deadline, anchor_vae)
    vae_s = time.time() - t0
    t1 = time.time()
    unet_steps_run = 0
    if config.unet_steps:
        latents = encode_latents(vae, data, device, keep_scaling=bool(args.init_from))
        unet_steps_run = train_unet(unet, text_encoder, tokenizer, scheduler, latents, data, config, device, work_dir, deadline)
    unet_s = time.time() - t1
    stats = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu x{os.cpu_count()}",
        "vae_seconds": round(vae_s, 1),
        "unet_seconds": round(unet_s, 1),
        "vae_steps_run": vae_steps_run,
        "unet_steps_run": unet_steps_run,
        "total_seconds": round(time.time() - started, 1),
    }
    earlier = None
    if args.init_from and (args.init_from / "toy_world.json").exists():
        earlier = json.loads((args.init_from / "toy_world.json").read_text(encoding="utf-8"))
    stats["stage"] = args.preset
    stats["command"] = "python -m engine.toy.train_toy " + " ".join(argv if argv is not None else sys.argv[1:])
    export(vae.cpu(), unet.cpu(), text_encoder.cpu(), tokenizer, scheduler, args.out, config, stats, earlier)
    log.info("exported to %s: %s", args.out, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
