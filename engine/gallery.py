"""Galleries: every column (the base model, a run, a checkpoint of a run) draws every prompt with
every seed, so the cells of one row differ only by what the column learned.

Columns go one after another: a column's adapter is put on the loaded base model once
(``engine.adapters``: LoRA scale, a new word, a DreamBooth UNet; no reload), then its cells are
batched for the device. Each image has its own CPU generator seeded with its seed: the same starting
noise in every column and on every device, and any cell can be re-made alone (the same picture up
to the float rounding of another batch size). The manifest
(``gallery.json``, layout in ``engine.protocol.gallery``) is written last, also after a cancel, so
the images made so far are never lost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine import adapters
from engine.generate import GenerationSettings, check_prompt_length, make_scheduler, save_png_atomic
from engine.jobs import JobCancelled, JobContext
from engine.protocol.gallery import MANIFEST_NAME, MANIFEST_VERSION, fill_template, image_file


def plan_cells(params: dict) -> list[dict]:
    """The images of one column, in order: every prompt row × seed, then the prior prompt × seed."""
    cells = []
    for row, template in enumerate(params["prompts"]):
        prompt = fill_template(template, params["token"], params["class_noun"])
        cells += [{"row": row, "seed": seed, "prompt": prompt, "kind": "subject"} for seed in params["seeds"]]
    if params["prior_prompt"]:
        prompt = fill_template(params["prior_prompt"], "", params["class_noun"])
        cells += [{"row": -1, "seed": seed, "prompt": prompt, "kind": "prior"} for seed in params["seeds"]]
    return cells


def run_gallery_job(params: dict, ctx: JobContext, state) -> dict:
    import torch

    loaded = state.model_cache().require()
    pipe = loaded.pipeline
    native = loaded.native_resolution
    width, height = params["width"] or native, params["height"] or native
    cells = plan_cells(params)
    for prompt in {c["prompt"] for c in cells} | {params["negative_prompt"]}:
        check_prompt_length(pipe.tokenizer, prompt, "prompt")
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, batch = params["steps"], params["batch"]
    total_images = len(cells) * len(params["columns"])
    total_units = total_images * steps
    made: list[dict] = []
    started = time.perf_counter()
    complete = False
    ctx.progress(0, total_units, force=True, image=0, images=total_images)
    try:
        for column in params["columns"]:
            ctx.log(f"column {column.get('label') or column['key']}")
            adapters.apply(loaded, column.get("adapter"))
            pipe.scheduler = make_scheduler(params["scheduler"], loaded.base_scheduler_config)
            for start in range(0, len(cells), batch):
                chunk = cells[start:start + batch]
                done_units = len(made) * steps

                def on_step_end(pipeline, step_index, timestep, callback_kwargs, _n=len(chunk), _done=done_units):
                    ctx.progress(_done + (step_index + 1) * _n, total_units, image=len(made), images=total_images)
                    return callback_kwargs

                with torch.inference_mode():
                    images = pipe(
                        prompt=[c["prompt"] for c in chunk],
                        negative_prompt=[params["negative_prompt"]] * len(chunk) if params["negative_prompt"] else None,
                        num_inference_steps=steps,
                        guidance_scale=params["guidance"],
                        width=width,
                        height=height,
                        generator=[torch.Generator("cpu").manual_seed(c["seed"]) for c in chunk],
                        callback_on_step_end=on_step_end,
                        output_type="pil",
                    ).images
                for cell, image in zip(chunk, images, strict=True):
                    made.append(_save_cell(out_dir, column, cell, image, params, loaded, width, height, ctx))
                # after every batch: if the engine is killed, the folder still says what it holds
                _write_json_atomic(out_dir / MANIFEST_NAME, _manifest(params, made, loaded, width, height, False))
        complete = True
    except JobCancelled:
        ctx.log(f"cancelled after {len(made)} of {total_images} images; the manifest lists what was made")
        raise
    finally:
        adapters.apply(loaded, None)  # the next job starts from the plain base model
        manifest = _manifest(params, made, loaded, width, height, complete)
        _write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return {
        "manifest": str(out_dir / MANIFEST_NAME),
        "images": len(made),
        "columns": len(params["columns"]),
        "seconds": round(time.perf_counter() - started, 2),
        "device": loaded.device,
    }


def _save_cell(out_dir: Path, column: dict, cell: dict, image, params: dict, loaded, width: int, height: int,
               ctx: JobContext) -> dict:
    settings = GenerationSettings(
        prompt=cell["prompt"], negative_prompt=params["negative_prompt"], seed=cell["seed"], steps=params["steps"],
        guidance=float(params["guidance"]), width=width, height=height, scheduler=params["scheduler"],
        model_name=loaded.ref.name,
    )
    extra = {"Gallery column": (column.get("label") or column["key"]).replace(",", " ")}
    adapter = column.get("adapter") or {}
    if adapter:
        extra["Run"] = Path(adapter["folder"]).parent.name
        extra["Lora scale"] = f"{float(adapter.get('scale', 1.0)):g}"
        if adapter.get("checkpoint"):
            extra["Checkpoint"] = Path(adapter["checkpoint"]).name
    text = settings.a1111_parameters(cell["seed"], extra)
    relative = image_file(column["key"], cell["row"], cell["seed"])
    save_png_atomic(image, out_dir / relative, text)
    entry = {"column": column["key"], "row": cell["row"], "seed": cell["seed"], "prompt": cell["prompt"],
             "kind": cell["kind"], "file": relative}
    ctx.artifact(str(out_dir / relative), "image", parameters=text, column=entry["column"], row=entry["row"],
                 seed=entry["seed"], prompt=entry["prompt"], cell_kind=entry["kind"], file=relative)
    return entry


def _manifest(params: dict, images: list[dict], loaded, width: int, height: int, complete: bool) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "complete": complete,
        "token": params["token"],
        "class_noun": params["class_noun"],
        "prompts": list(params["prompts"]),
        "seeds": list(params["seeds"]),
        "prior_prompt": params["prior_prompt"],
        "columns": [{"key": c["key"], "label": c.get("label") or c["key"], "adapter": c.get("adapter")}
                    for c in params["columns"]],
        "settings": {
            "steps": params["steps"], "guidance": params["guidance"], "negative_prompt": params["negative_prompt"],
            "scheduler": params["scheduler"], "width": width, "height": height, "model": loaded.ref.name,
        },
        "images": images,
    }


def _write_json_atomic(path: Path, data: dict) -> None:
    from engine.train.export import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
