"""Training data, computed once: VAE latent distributions of every photo (and its mirror image),
prompt embeddings while the text encoder is frozen, and prior-preservation class images cached on
disk by (model, prompt, resolution, steps) so later subjects of the same class reuse them.

Caching the latent *distribution* (mean, std) rather than one sample keeps training identical to
encoding every step: each step still draws a fresh sample from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass
class LatentSet:
    mean: torch.Tensor  # (n, 4, h, w)
    std: torch.Tensor
    flipped_mean: torch.Tensor | None = None
    flipped_std: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, index: torch.Tensor, flip: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean[index], self.std[index]
        if flip is not None and self.flipped_mean is not None:
            pick = flip.view(-1, 1, 1, 1).to(mean.device)
            mean = torch.where(pick, self.flipped_mean[index], mean)
            std = torch.where(pick, self.flipped_std[index], std)
        return mean + std * noise.to(mean.device, mean.dtype)


def load_images(paths: list[str], resolution: int) -> list[Image.Image]:
    """Square RGB images at ``resolution`` (the GUI already cropped them; this only guarantees the size)."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (resolution, resolution):
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize(
                    (resolution, resolution), Image.Resampling.LANCZOS
                )
            images.append(image)
    return images


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_latents(vae, images: list[Image.Image], flip: bool, batch: int = 8) -> LatentSet:
    device, dtype = vae.device, vae.dtype
    pixels = to_tensor(images)

    def encode(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means, stds = [], []
        for chunk in tensor.split(batch):
            dist = vae.encode(chunk.to(device, dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        return torch.cat(means), torch.cat(stds)

    mean, std = encode(pixels)
    if not flip:
        return LatentSet(mean, std)
    flipped_mean, flipped_std = encode(pixels.flip(-1))
    return LatentSet(mean, std, flipped_mean, flipped_std)


@torch.no_grad()
def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


# ------------------------------------------------------------------------------------- class images
def class_cache_folder(root: Path, model_key: str, prompt: str, resolution: int, steps: int) -> Path:
    key = json.dumps([model_key, prompt, resolution, steps])
    slug = "".join(ch if ch.isalnum() else "-" for ch in prompt.lower())[:40].strip("-")
    return Path(root) / f"{slug}-{resolution}px-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


# Each class seed keeps two files: the PNG (what the user sees, and what older caches hold) and the
# base model's own final latent before decoding (unscaled, as the VAE's posterior mean would be). The
# prior trains on the latent: re-encoding the decoded PNG lands elsewhere (the toy VAE's round trip
# moves a latent by about a third of its spread), so a prior on re-encoded PNGs pulls the model
# towards a distribution that is not its own and the class drifts.
def class_latent_path(folder: Path, seed: int) -> Path:
    return folder / f"{seed:05d}.latent.safetensors"


def missing_class_seeds(folder: Path, count: int) -> list[int]:
    return [
        seed for seed in range(count)
        if not (folder / f"{seed:05d}.png").is_file() or not class_latent_path(folder, seed).is_file()
    ]


def make_class_images(loaded, folder: Path, prompt: str, count: int, resolution: int, steps: int, on_image) -> None:
    """Generate the missing class images with the base model (seed i for image i), the PNG and its
    latent, each written atomically (latent first), so an interrupted run keeps what it made."""
    from safetensors.torch import save_file

    from engine.generate import GenerationSettings, generate_images

    pipe = loaded.pipeline
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt.txt").write_text(prompt + "\n", encoding="utf-8")
    for seed in missing_class_seeds(folder, count):
        settings = GenerationSettings(
            prompt=prompt, negative_prompt="", seed=seed, steps=steps, guidance=7.5, width=resolution,
            height=resolution, scheduler="ddim",
            model_name=loaded.ref.name,
        )
        latents = generate_images(loaded, settings, 1, output_type="latent")
        with torch.inference_mode():
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        (image,) = pipe.image_processor.postprocess(decoded, output_type="pil")
        tmp = folder / f".{seed:05d}.latent.tmp"
        unscaled = (latents[0] / pipe.vae.config.scaling_factor).float().cpu().contiguous()
        save_file({"latent": unscaled}, str(tmp))
        tmp.replace(class_latent_path(folder, seed))
        tmp = folder / f".{seed:05d}.png.tmp"
        image.save(tmp, format="PNG")
        tmp.replace(folder / f"{seed:05d}.png")
        on_image(seed)


def class_image_paths(folder: Path, count: int) -> list[str]:
    return [str(folder / f"{seed:05d}.png") for seed in range(count)]


def load_class_latents(folder: Path, count: int, flip: bool, device) -> LatentSet:
    """The cached base-model latents as a LatentSet with no spread: the prior's targets are exactly
    what the base model drew (a mirrored latent stands in for the mirrored picture's)."""
    from safetensors.torch import load_file

    mean = torch.stack([load_file(str(class_latent_path(folder, seed)))["latent"] for seed in range(count)]).to(device)
    std = torch.zeros_like(mean)
    if not flip:
        return LatentSet(mean, std)
    return LatentSet(mean, std, mean.flip(-1), std)
