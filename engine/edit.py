"""The edit job: Prompt-to-Prompt on a generated picture (seed + prompt) or on any photo (inverted).

The denoising loop is written here rather than taken from StableDiffusionPipeline.__call__: an
edit must put the source branch back on an inverted trajectory each step (direct inversion), use a
different unconditional embedding per step (null-text), blend latents between the branches (local
blend) and tell the attention controller which step it is in. It uses the pipeline's own parts
(encode_prompt, prepare_latents, the VAE, the image processor), so with nothing to edit it
reproduces the pipeline's picture.

The source branch does not depend on anything the user changes on the target side (target words,
reweights, schedules, blend), so the first edit records it (latents, attention) and a re-render
runs only the target branch against that record: half the batch.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import adapters, devices, invert
from engine.attention import processor as attention
from engine.attention.align import choose_mode, tokenize
from engine.attention.controller import EditController, SourceRecord
from engine.attention.heatmaps import write_heatmaps
from engine.edit_plan import blend_resolution, build_spec, capture_resolutions, record_bytes
from engine.generate import check_prompt_length, make_scheduler, save_png_atomic
from engine.jobs import JobFailed

RECORDS_KEPT = 2
INVERSIONS_KEPT = 4


@dataclass
class Source:
    """Where the source branch starts, and how it is steered."""

    key: tuple  # identity of the source branch (for the record cache)
    start: torch.Tensor  # x_T, (1, 4, h, w)
    original: object  # PIL image for inverted sources, else None (decoded from the branch)
    trajectory: list | None = None  # direct inversion: source latents to return to each step
    uncond_steps: list | None = None  # null-text: one unconditional embedding per step
    uncond_is_source: bool = False  # negative-prompt inversion
    inversion_cached: bool = False


class LruCache:
    """The last ``entries`` values put, by key (an OrderedDict in recency order)."""

    def __init__(self, entries: int):
        self.entries = entries
        self._items: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: tuple):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: tuple, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)


class EditCaches:
    """Kept across jobs on the engine state: inversions and recorded source branches."""

    def __init__(self):
        self.inversions = LruCache(INVERSIONS_KEPT)
        self.records = LruCache(RECORDS_KEPT)


def caches_of(state) -> EditCaches:
    if getattr(state, "edit_caches", None) is None:
        state.edit_caches = EditCaches()
    return state.edit_caches


# ----------------------------------------------------------------------------------- the source
MAX_INPUT_MEGAPIXELS = 64  # as the library's photo import: more is a bomb or a scan, never needed here


def load_input_image(path: str, grid: int, native: int):
    """The photo, upright RGB, scaled so its longer side is the model's native size and both sides
    are multiples of what the UNet can divide."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    too_big = JobFailed(
        f"the image {Path(path).name} declares more than {MAX_INPUT_MEGAPIXELS} megapixels (a decompression "
        "bomb or a huge scan)", "export a smaller version (it is scaled to the model's size anyway) and edit that",
        code="bad_image")
    try:
        with Image.open(path) as opened:
            # checked before decoding: a small file can declare billions of pixels
            if opened.width * opened.height > MAX_INPUT_MEGAPIXELS * 1_000_000:
                raise too_big
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Image.DecompressionBombError:  # Pillow's own limit, hit while opening
        raise too_big from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise JobFailed(f"cannot read the image {Path(path).name}: {exc}", "choose a PNG, JPEG or WebP file",
                        code="bad_image") from None
    scale = native / max(image.size)
    size = tuple(max(grid, int(round(side * scale / grid)) * grid) for side in image.size)
    return image.resize(size, Image.Resampling.LANCZOS), image.size


def prepare_source(pipe, params, scheduler, cond_source, uncond, caches, model_key, ctx) -> Source:
    steps = params["steps"]
    grid = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    native = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    if not params["image"]:
        width, height = params["width"] or native, params["height"] or native
        if width % grid or height % grid:
            raise JobFailed(f"{width}×{height} does not fit this model's grid", f"use multiples of {grid} px",
                            code="invalid_params")
        generator = [torch.Generator("cpu").manual_seed(params["seed"])]
        start = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, cond_source.dtype,
                                     pipe.device, generator)
        return Source(("seed", params["seed"], width, height), start, None)
    longest = max(params["width"] or 0, params["height"] or 0) or native  # photos keep their aspect
    image, _ = load_input_image(params["image"], grid, longest)
    method = params["invert"]
    key = invert.inversion_key(
        image.tobytes(), image.size, model_key, params["source_prompt"], steps,
        params["guidance"] if method == "nulltext" else None, method == "nulltext",
    )
    cached = caches.inversions.get(key)
    was_cached = cached is not None
    if cached is None:
        pixels = pipe.image_processor.preprocess(image).to(pipe.device, dtype=pipe.vae.dtype)
        with torch.no_grad():
            latent0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        total = steps * (2 if method == "nulltext" else 1)
        progress = lambda k, n: ctx.progress(k, total, phase="inverting")  # noqa: E731
        trajectory = invert.ddim_trajectory(pipe.unet, scheduler, latent0.to(cond_source.dtype), cond_source,
                                            progress)
        uncond_steps = None
        if method == "nulltext":
            uncond_steps = invert.null_text_embeddings(
                pipe.unet, scheduler, trajectory, cond_source, uncond, float(params["guidance"]),
                lambda k, n: ctx.progress(steps + k, total, phase="inverting"), ctx.check_cancelled,
            )
        cached = (trajectory, uncond_steps)
        caches.inversions.put(key, cached)
    trajectory, uncond_steps = cached
    return Source(
        ("image", key, method), trajectory[-1], image,
        trajectory=trajectory if method == "direct" else None,
        uncond_steps=uncond_steps,
        uncond_is_source=method == "npi",
        inversion_cached=was_cached,
    )


# ----------------------------------------------------------------------------------- the loop
def denoise(pipe, scheduler, controller: EditController, source: Source, cond, uncond, guidance, ctx,
            replay: SourceRecord | None, record: SourceRecord | None, shared: int = 0):
    """Sample the rows of ``cond`` ((rows, 77, d)); rows follow ``controller.rows``. The target row
    takes the source's latent after each of the first ``shared`` steps."""
    rows = cond.shape[0]
    guided = guidance > 1.0
    latents = source.start.repeat(rows, 1, 1, 1)
    timesteps = scheduler.timesteps
    steps = len(timesteps)
    for i, t in enumerate(timesteps):
        ctx.check_cancelled()
        controller.step = i
        if source.uncond_steps is not None:
            uncond_now = source.uncond_steps[i].expand(rows, -1, -1)
        else:
            uncond_now = uncond.expand(rows, -1, -1)
        model_in = torch.cat([latents, latents]) if guided else latents
        context = torch.cat([uncond_now, cond]) if guided else cond
        eps = pipe.unet(scheduler.scale_model_input(model_in, t), t, encoder_hidden_states=context).sample
        if guided:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
        if controller.rows == "target":
            source_latent = replay.latents[i]
        else:
            # Direct inversion: the source goes back onto the inverted path; the target keeps its
            # own (measured on 8 rendered scenes: correcting the target too changed nothing, 32.0
            # vs 32.1 dB outside the edited object).
            if source.trajectory is not None:
                latents[0] = source.trajectory[steps - i - 1]
            source_latent = latents[0]
            if record is not None:
                record.latents.append(source_latent.clone())
        if controller.rows != "source" and controller.spec is not None:
            if i < shared:
                latents[-1] = source_latent
            else:
                latents[-1] = controller.blend(latents[-1], source_latent, steps)
        ctx.progress(i + 1, steps, phase="editing")
    return latents


def decode(pipe, latents) -> list:
    with torch.no_grad():
        pixels = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def psnr(a, b, where=None) -> float:
    """dB between two pictures (optionally only where the mask is true)."""
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    mse = float(diff[where].mean() if where is not None else diff.mean())
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")


# ----------------------------------------------------------------------------------- the job
def run_edit_job(params: dict, ctx, state) -> dict:
    started = time.perf_counter()
    loaded = state.model_cache().require()
    pipe = loaded.pipeline
    caches = caches_of(state)
    adapter_key = adapters.apply(loaded, params["adapter"])
    source_text = params["source_prompt"].strip()
    target_text = params["target_prompt"].strip() or source_text
    negative_text = params["negative_prompt"].strip()
    for text, label in ((source_text, "source prompt"), (target_text, "target prompt"),
                        (negative_text, "negative prompt")):
        check_prompt_length(pipe.tokenizer, text, label)
    src, tgt = tokenize(pipe.tokenizer, source_text), tokenize(pipe.tokenizer, target_text)
    neg = tokenize(pipe.tokenizer, negative_text) if negative_text else None
    mode, notes = choose_mode(params["mode"], src, tgt)
    guidance = float(params["guidance"])
    steps = params["steps"]
    scheduler = make_scheduler("ddim", loaded.base_scheduler_config)
    scheduler.set_timesteps(steps, device=pipe.device)
    with torch.inference_mode(False), torch.no_grad():
        embeds, _ = pipe.encode_prompt([source_text, target_text], pipe.device, 1, False)
        negative, _ = pipe.encode_prompt([negative_text], pipe.device, 1, False)
        embeds, negative = embeds.clone(), negative.clone()  # usable outside inference mode (null-text)
    # Putting a subject in: a run whose word the source prompt does not name did not draw the
    # source picture, so the source branch (and its inversion) runs on the base model and only the
    # target branch gets the run's UNet. A source that names the word was drawn with the run: both.
    named = adapters.named_in(loaded, source_text)
    split = adapters.changes_unet(loaded) and not named
    model_key = (loaded.key, adapter_key if named else ())  # what the source branch depends on
    with adapters.plain_unet(loaded) if split else contextlib.nullcontext():
        source = prepare_source(pipe, params, scheduler, embeds[:1], negative, caches, model_key, ctx)
    if source.uncond_is_source:
        negative = embeds[:1]
        if negative_text:
            notes.append("negative-prompt inversion uses the source prompt as the negative prompt; yours was not used")
            neg = None
    spec = build_spec(params, mode, src, tgt, steps, notes)
    layers = attention.attention_layers(pipe.unet, *source.start.shape[-2:])
    # asked-for reweights run even at 1.0; a subject on the target side is an edit even at target = source
    editing = mode != "same" or bool(params["reweight"]) or split
    capture = capture_resolutions(layers, params["heatmaps"], editing)
    if spec.blend_source or spec.blend_target:
        spec.blend_res = blend_resolution(layers)
    source_key = (model_key, source.key, source_text, negative_text, steps, guidance, params["invert"],
                  tuple(sorted(capture)))
    replay = caches.records.get(source_key) if editing else None
    if replay is not None and not replay.covers(spec):
        replay = None
    reused = replay is not None
    rows = "target" if replay is not None else ("pair" if editing else "source")
    record = None
    if rows == "pair":  # a heatmap-only look records nothing: the first edit after it does
        cross_until, self_until = spec.injected_until()
        needed = record_bytes(pipe.unet, layers, cross_until, self_until, embeds.element_size())
        if needed <= devices.cache_budget_bytes(loaded.device):
            record = SourceRecord(cross_until=cross_until, self_until=self_until)
        elif split and loaded.adapters.method == "dreambooth":
            split = False
            notes.append(f"the source branch's attention ({needed / 2**30:.1f} GiB) is over the cache budget, so "
                         "the fine-tuned model draws both branches: the original may change a little")
        else:
            notes.append(f"the source branch's attention ({needed / 2**30:.1f} GiB) is over the cache budget; "
                         "re-renders recompute it")
    token_counts = (len(src.ids), len(tgt.ids), len(neg.ids) if neg else 0)
    if rows == "pair" and split and loaded.adapters.method == "dreambooth":
        # Two UNets cannot share a batch: the base model draws and records the source branch
        # first, and the fine-tuned one draws the target against that record, as a re-render does.
        with adapters.plain_unet(loaded):
            recorder = EditController(layers, "source", spec, capture, token_counts, guidance > 1.0, record=record)
            _sample(pipe, scheduler, recorder, source, embeds[:1], negative, guidance, ctx, None, record)
        caches.records.put(source_key, record)
        replay, record, rows = record, None, "target"
    controller = EditController(layers, rows, spec if editing else None, capture, token_counts, guidance > 1.0,
                                record=record, replay=replay)
    cond = {"pair": embeds, "source": embeds[:1], "target": embeds[1:]}[rows]
    # a LoRA run shares the batch: peft adds it to the target rows only, the source rows stay exact
    rows_on = adapters.lora_on_rows(loaded, [False, True]) if split and rows == "pair" else contextlib.nullcontext()
    with rows_on:
        images = _sample(pipe, scheduler, controller, source, cond, negative, guidance, ctx, replay, record,
                         int(round(params["shared_steps"] * steps)))
    if record is not None:
        caches.records.put(source_key, record)
    source_image = replay.source_image if replay is not None else images[0]
    edited_image = images[-1]
    result = _write_outputs(params, ctx, loaded, source, source_image, edited_image, controller, layers, capture,
                            scheduler, src, tgt, neg, mode, notes, reused, started)
    result["subject_branch"] = ("target" if split else "both") if adapter_key else ""
    return result


def _sample(pipe, scheduler, controller, source, cond, negative, guidance, ctx, replay, record, shared=0) -> list:
    """One denoising run under the controller's attention; the decoded rows. A record being made
    keeps the decoded source picture."""
    attention.install(pipe.unet, controller, controller.controlled_layers())
    try:
        with torch.no_grad():
            latents = denoise(pipe, scheduler, controller, source, cond, negative, guidance, ctx, replay, record,
                              shared)
        images = decode(pipe, latents)
    finally:
        attention.uninstall(pipe.unet)
    if record is not None:
        record.source_image = images[0]
    return images


def _write_outputs(params, ctx, loaded, source, source_image, edited_image, controller, layers, capture, scheduler,
                   src, tgt, neg, mode, notes, reused, started) -> dict:
    out_dir = Path(params["out_dir"])
    stem = params["name"] or _free_stem(out_dir, time.strftime("edit-%Y%m%d-%H%M%S"))
    described = f"{params['source_prompt']} → {params['target_prompt'] or params['source_prompt']}"
    meta = f"{described}\nSteps: {params['steps']}, CFG scale: {params['guidance']:g}, Seed: {params['seed']}, " \
           f"Model: {loaded.ref.name}, Edit: {mode}, Inversion: {params['invert'] if params['image'] else 'none'}"
    original = source.original if source.original is not None else source_image
    result = {
        "original": str(save_png_atomic(original, out_dir / f"{stem}-original.png", meta)),
        "reconstruction": "",
        "reconstruction_psnr": None,
        "edited": str(save_png_atomic(edited_image, out_dir / f"{stem}-edited.png", meta)),
        "heatmaps": "",
        "mode": mode,
        "notes": notes,
        "source_words": src.as_json()["words"],
        "target_words": tgt.as_json()["words"],
        "reused_source": reused,
        "inversion_cached": source.inversion_cached,
        "device": loaded.device,
    }
    if source.original is not None:
        result["reconstruction"] = str(save_png_atomic(source_image, out_dir / f"{stem}-reconstruction.png", meta))
        result["reconstruction_psnr"] = round(psnr(source_image, source.original), 2)
    if params["heatmaps"]:
        prompts = {"source": (src.as_json(), controller.source_maps)}
        prompts["target"] = (tgt.as_json(), controller.target_maps if controller.target_maps else controller.source_maps)
        if neg is not None and controller.negative_maps:
            prompts["negative"] = (neg.as_json(), controller.negative_maps)
        path = write_heatmaps(out_dir / f"{stem}-heatmaps.npz", layers, sorted(capture, reverse=True), prompts,
                              [int(t) for t in scheduler.timesteps], edited_image.size)
        result["heatmaps"] = str(path)
    for kind in ("original", "reconstruction", "edited"):
        if result[kind]:
            ctx.artifact(result[kind], "image", role=kind)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _free_stem(folder: Path, stem: str) -> str:
    """A default file stem no earlier edit used (live re-renders come several a second)."""
    candidate, n = stem, 1
    while (folder / f"{candidate}-edited.png").exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate
