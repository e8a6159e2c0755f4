"""Our LoRA training step against the inner loop of diffusers' ``train_dreambooth_lora.py``.

    python -m benchmarks.train_step [--steps 20] [--repeats 3] [--sd15-shape --size 512] [--json OUT]

Both variants train the same LoRA (rank 8 on to_q/to_k/to_v/to_out.0) on the same model with the
same batch (2 instance + 2 class images, prior preservation), in separate processes run
alternately, so each one's peak memory is its own:
  * reference — every step encodes the pixel batch with the VAE and the prompts with the text
    encoder, as the diffusers script does (no caching), then the UNet forward/backward;
  * ours — engine/train/loop.py's Trainer.train_step: latents and prompt embeddings cached once.
Time is the median seconds per step after 2 warm-up steps; peak memory is CUDA max allocated
(GPU, weights included) or, on CPU, the process's peak RSS above its RSS once the model is loaded. Printed as a table with the ratios ours/reference.
Default model: the shipped toy world on CPU. ``--sd15-shape``: an SD-1.5-shaped model with random
weights (same FLOPs) — meant for a CUDA GPU, where the table names the card.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOY = Path(__file__).resolve().parents[1] / "resources" / "toy-world"


def load(sd15: bool, device: str):
    import torch

    from engine import devices
    from engine.models.registry import LoadedModel, ModelCache, ModelRef, resolve_source

    if not sd15:
        cache = ModelCache()
        cache.load(resolve_source({"source": str(TOY)}), device)
        return cache.current
    from benchmarks.sd15_shape import build_sd15_shaped_pipeline

    dtype = devices.dtype_name(device, "inference")
    pipe = build_sd15_shaped_pipeline().to(device, getattr(torch, dtype))
    return LoadedModel(ModelRef("folder", "sd15-shape", "SD1.5-shaped (random)"), pipe, device, dtype, 0.0)


def write_images(folder: Path, size: int, n: int = 4) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def make_trainer(loaded, tmp: Path, size: int):
    from engine.jobs import Job, JobContext
    from engine.protocol import validate_job
    from engine.protocol.training import preset
    from engine.train.loop import RunSpec, Trainer

    images = write_images(tmp / "instance", size)
    config = preset("lora", 4, loaded.device.split(":")[0])
    config.update(batch=2, rank=8, class_images=4, resolution=size, sample_every=0, learning_rate=1e-4)
    params = validate_job("train", dict(method="lora", token="<sks-dog>", class_noun="dog", images=images,
                                        run_dir=str(tmp / "run"), config=config))
    spec = RunSpec("lora", "<sks-dog>", "dog", images, tmp / "run", params["config"], preflight=True)
    trainer = Trainer(loaded, spec, JobContext(Job("train", params), lambda e: None))
    return trainer, images


def measure_ours(loaded, tmp: Path, size: int, steps: int) -> list[float]:
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from engine.train import methods
    from engine.train.runtime import make_accelerator, make_optimizer

    trainer, images = make_trainer(loaded, tmp, size)
    cfg = trainer.config
    trainer.accelerator = make_accelerator(cfg, loaded.device)
    trainer.noise_scheduler = DDPMScheduler.from_config(loaded.base_scheduler_config)
    trainer.trainables = methods.setup("lora", loaded.pipeline, cfg, "<sks-dog>", "dog", loaded.device)
    trainer.build_caches(images)  # preflight mode: the instance photos stand in for class images
    trainer.optimizer = make_optimizer(cfg, trainer.trainables.param_groups, loaded.device)
    trainer.lr_scheduler = get_scheduler("constant", trainer.optimizer)
    trainer.optimizer, trainer.lr_scheduler = trainer.accelerator.prepare(trainer.optimizer, trainer.lr_scheduler)
    trainer.trainables.unet.train()
    return timed(loaded.device, steps, trainer.train_step)


def measure_reference(loaded, tmp: Path, size: int, steps: int) -> list[float]:
    """The diffusers script's inner loop, written out (no caching: VAE and text encoder every step)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from engine.train import data, methods
    from engine.train.runtime import make_accelerator

    pipe = loaded.pipeline
    trainer, images = make_trainer(loaded, tmp, size)
    accelerator = make_accelerator(trainer.config, loaded.device)
    noise_scheduler = DDPMScheduler.from_config(loaded.base_scheduler_config)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    methods.add_lora(pipe.unet, 8, 8.0)
    params = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
    optimizer = accelerator.prepare(torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2))
    pixels = data.to_tensor(data.load_images(images, size))
    ids = data.tokenize(pipe.tokenizer, ["a photo of <sks-dog> dog"] * 2 + ["a photo of a dog"] * 2)
    pipe.unet.train()
    generator = torch.Generator().manual_seed(0)

    def step(index: int) -> float:
        batch = pixels[torch.randint(0, len(pixels), (4,), generator=generator)].to(loaded.device, pipe.vae.dtype)
        latents = pipe.vae.encode(batch).latent_dist.sample() * pipe.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (4,), device=latents.device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        encoder_hidden_states = pipe.text_encoder(ids.to(loaded.device))[0]
        with accelerator.autocast():
            pred = pipe.unet(noisy, t, encoder_hidden_states).sample
        pred, pred_prior = pred.chunk(2)
        target, target_prior = noise.chunk(2)
        loss = F.mse_loss(pred.float(), target.float()) + F.mse_loss(pred_prior.float(), target_prior.float())
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    try:
        return timed(loaded.device, steps, step)
    finally:
        methods.remove_lora(pipe.unet)


def timed(device: str, steps: int, step) -> list[float]:
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for warm in range(2):
        step(warm + 1)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(steps):
        sync()
        tick = time.perf_counter()
        step(index + 3)
        sync()
        times.append(time.perf_counter() - tick)
    return times


def current_rss() -> int:
    import os

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def child(args) -> None:
    import resource

    import torch

    from engine import devices

    device = devices.select_device(args.device)
    loaded = load(args.sd15_shape, device)
    # CPU: the process's RSS after loading (Python, torch, the weights) is the same for both
    # variants; what training adds on top of it is what differs.
    loaded_rss = current_rss()
    size = args.size or loaded.native_resolution
    with tempfile.TemporaryDirectory() as tmp:
        measure = measure_ours if args.variant == "ours" else measure_reference
        times = measure(loaded, Path(tmp), size, args.steps)
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - loaded_rss)
    card = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print("RESULT " + json.dumps({"variant": args.variant, "median_s": statistics.median(times), "peak_bytes": peak,
                                  "device": device, "card": card, "size": size}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sd15-shape", action="store_true")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variant", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        child(args)
        return 0
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    for _ in range(args.repeats):
        for variant in ("reference", "ours"):  # alternate: drift hits both alike
            cmd = [sys.executable, "-m", "benchmarks.train_step", "--variant", variant, "--steps", str(args.steps),
                   "--device", args.device] + (["--sd15-shape"] if args.sd15_shape else []) + (
                   ["--size", str(args.size)] if args.size else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.split("RESULT ", 1)[1]))
    summary = {v: {"median_s": statistics.median(r["median_s"] for r in rs),
                   "peak_bytes": statistics.median(r["peak_bytes"] for r in rs)} for v, rs in runs.items()}
    first = runs["ours"][0]
    ratio_t = summary["ours"]["median_s"] / summary["reference"]["median_s"]
    ratio_m = summary["ours"]["peak_bytes"] / summary["reference"]["peak_bytes"]
    model = "SD1.5-shaped (random weights)" if args.sd15_shape else "toy world"
    print(f"LoRA training step, {model}, {first['size']}², batch 2 + 2 prior, {first['card']} ({first['device']})")
    mem_label = "peak GiB" if first["device"].startswith("cuda") else "+RSS GiB"
    print(f"{'variant':<36} {'s/step':>8} {mem_label:>9}")
    for variant, label in (("reference", "diffusers train_dreambooth_lora loop"), ("ours", "ours (cached latents + text)")):
        print(f"{label:<36} {summary[variant]['median_s']:>8.4f} {summary[variant]['peak_bytes'] / 2**30:>9.3f}")
    print(f"{'ratio ours/reference':<36} {ratio_t:>7.2f}× {ratio_m:>8.2f}×   (targets ≤ 0.60× time, ≤ 0.70× memory)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model, "card": first["card"], "device": first["device"],
                                         "size": first["size"], "runs": runs, "summary": summary,
                                         "ratio_time": ratio_t, "ratio_memory": ratio_m}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
