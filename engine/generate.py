"""Text-to-image from the loaded base model, written as PNGs that carry their parameters.

The ``parameters`` PNG text chunk uses the AUTOMATIC1111 layout (prompt line, ``Negative prompt:``
line, then ``Key: value`` pairs), which A1111, ComfyUI, Civitai and most image viewers read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine import __version__
from engine.jobs import JobContext

# Our scheduler names → (diffusers class, A1111 sampler name, extra config).
SCHEDULERS: dict[str, tuple[str, str, dict]] = {
    "ddim": ("DDIMScheduler", "DDIM", {}),
    "euler": ("EulerDiscreteScheduler", "Euler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", "Euler a", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", "DPM++ 2M", {"algorithm_type": "dpmsolver++"}),
    "pndm": ("PNDMScheduler", "PLMS", {}),
    "unipc": ("UniPCMultistepScheduler", "UniPC", {}),
}


@dataclass
class GenerationSettings:
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str
    model_name: str

    def a1111_parameters(self, seed: int, extra: dict | None = None) -> str:
        """The text A1111-compatible tools parse (one image's own seed; ``extra``: more Key: value pairs)."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        pairs = [
            ("Steps", self.steps),
            ("Sampler", SCHEDULERS[self.scheduler][1]),
            ("CFG scale", _fmt_number(self.guidance)),
            ("Seed", seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model", self.model_name.replace(",", " ")),
            ("Version", f"Subject2Subject {__version__}"),
            *(extra or {}).items(),
        ]
        lines.append(", ".join(f"{k}: {v}" for k, v in pairs))
        return "\n".join(lines)


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def make_scheduler(name: str, base_config: dict):
    import diffusers

    class_name, _, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base_config, **extra)


def save_png_atomic(image, path: Path, parameters: str) -> Path:
    """Write a PNG with its parameters chunk: temp file, then rename (never a half-written PNG)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def unique_path(folder: Path, stem: str) -> Path:
    candidate = folder / f"{stem}.png"
    n = 1
    while candidate.exists():
        candidate = folder / f"{stem}-{n}.png"
        n += 1
    return candidate


def generate_images(loaded, settings: GenerationSettings, batch: int, ctx: JobContext | None = None,
                    output_type: str = "pil"):
    """Run the pipeline; one seed per image (seed, seed+1, …) so any image can be re-made alone.
    ``output_type="latent"``: the final latents (scaled as the UNet sees them), not decoded."""
    import torch

    pipe = loaded.pipeline
    pipe.scheduler = make_scheduler(settings.scheduler, loaded.base_scheduler_config)
    # CPU generators: the same seed gives the same image on CUDA, MPS and CPU.
    generators = [torch.Generator("cpu").manual_seed(settings.seed + i) for i in range(batch)]

    def on_step_end(pipeline, step_index, timestep, callback_kwargs):
        if ctx is not None:
            ctx.progress(step_index + 1, settings.steps)
        return callback_kwargs

    if ctx is not None:
        ctx.progress(0, settings.steps, force=True)
    with torch.inference_mode():
        result = pipe(
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt or None,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            num_images_per_prompt=batch,
            generator=generators,
            callback_on_step_end=on_step_end,
            output_type=output_type,
        )
    return result.images


def run_generate_job(params: dict, ctx: JobContext, state) -> dict:
    from engine import adapters

    loaded = state.model_cache().require()
    adapters.apply(loaded, None)  # the plain base model, whatever run an edit put on it before
    native = loaded.native_resolution
    settings = GenerationSettings(
        prompt=params["prompt"],
        negative_prompt=params["negative_prompt"],
        seed=params["seed"],
        steps=params["steps"],
        guidance=float(params["guidance"]),
        width=params["width"] or native,
        height=params["height"] or native,
        scheduler=params["scheduler"],
        model_name=loaded.ref.name,
    )
    check_prompt_length(loaded.pipeline.tokenizer, settings.prompt, "prompt")
    check_prompt_length(loaded.pipeline.tokenizer, settings.negative_prompt, "negative prompt")
    started = time.perf_counter()
    images = generate_images(loaded, settings, params["batch"], ctx)
    out_dir = Path(params["out_dir"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for index, image in enumerate(images):
        seed = settings.seed + index
        text = settings.a1111_parameters(seed)
        path = save_png_atomic(image, unique_path(out_dir, f"{params['name_prefix']}{stamp}-s{seed}"), text)
        paths.append(str(path))
        ctx.artifact(str(path), "image", index=index, seed=seed, width=image.width, height=image.height, parameters=text)
    return {"images": paths, "seconds": round(time.perf_counter() - started, 3), "device": loaded.device}


def check_prompt_length(tokenizer, prompt: str, label: str) -> None:
    """CLIP sees 77 tokens; silently truncating a prompt changes the picture, so say so instead."""
    from engine.jobs import JobFailed

    if not prompt:
        return
    from engine.words import spell_out

    n_tokens = len(tokenizer(spell_out(tokenizer, prompt), truncation=False).input_ids)
    limit = tokenizer.model_max_length
    if n_tokens > limit:
        raise JobFailed(
            f"the {label} is {n_tokens} tokens long; the text encoder reads at most {limit}",
            "shorten it (the end would be ignored otherwise)",
            code="prompt_too_long",
        )
