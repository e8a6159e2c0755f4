"""Galleries (runs × prompts × seeds) and their evaluation: job parameters and the files they write
(stdlib only: the GUI builds, checks and reads these without importing torch).

A gallery compares *columns* (the base model, trained runs, or checkpoints of a run) on the same
prompt templates and the same seeds, so every cell of the grid is comparable: one seed gives every
column the same starting noise. Templates use ``{token}`` and ``{class}`` like training prompts;
every column, the base model included, gets the same filled prompt (for the base model the token is
an unknown word, which is what "the base model draws the subject in ≤ 10 %" measures).

Gallery folder (``out_dir``):
    gallery.json     the manifest (MANIFEST_VERSION), written last and atomically:
                     {"version", "token", "class_noun", "prompts": [template…], "seeds": [...],
                      "prior_prompt": str, "columns": [{"key", "label", "adapter"}…],
                      "settings": {"steps", "guidance", "negative_prompt", "scheduler", "width",
                                   "height", "model"},
                      "images": [{"column", "row", "seed", "prompt", "kind", "file"}…]}
                     ``row`` indexes ``prompts`` (kind "subject"); prior images (kind "prior",
                     ``row`` -1) use ``prior_prompt`` without the token, for the PRES metric.
                     ``file`` is relative to the gallery folder.
    <column>/r<row>-s<seed>.png, <column>/prior-s<seed>.png     images with A1111 parameters

Evaluation file (``evaluation.json`` beside the manifest unless told otherwise):
    {"version", "gallery", "metrics": [{"name", "title", "higher_is_better", "model", "note"}…],
     "rows": [{"column", "label", "scores": {name: SCORE}}…],
     "best": {"column": key, "label": str, "by": [metric names], "reason": str} | null}
    SCORE = {"value": float, "n": images used, "warning": str?} or
            {"value": null, "unavailable": reason}
"""

from __future__ import annotations

import re

from engine.protocol import SCHEDULERS, Field
from engine.protocol.editing import _adapter

MANIFEST_NAME = "gallery.json"
EVALUATION_NAME = "evaluation.json"
MANIFEST_VERSION = 1
MAX_COLUMNS = 16
MAX_PROMPTS = 100
MAX_SEEDS = 64
COLUMN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")

# Metrics, in table order. "model" says which feature model a score needs (settings → feature models).
METRICS: dict[str, dict] = {
    "clip_t": {"title": "CLIP-T", "higher_is_better": True, "model": "clip",
               "note": "prompt–image CLIP similarity ×100 (the CLIP score convention), max(cos, 0)·100"},
    "clip_i": {"title": "CLIP-I", "higher_is_better": True, "model": "clip",
               "note": "mean cosine similarity of generated images to the subject's photos (CLIP image embeddings)"},
    "dino": {"title": "DINO", "higher_is_better": True, "model": "dino",
             "note": "mean cosine similarity of generated images to the subject's photos (DINO ViT-S/16 CLS)"},
    "pres": {"title": "PRES", "higher_is_better": False, "model": "dino",
             "note": "prior preservation: DINO similarity of class-prompt images to the subject's photos (lower keeps the class apart)"},
    "div": {"title": "DIV", "higher_is_better": True, "model": "lpips",
            "note": "diversity: mean LPIPS distance between images of the same prompt (different seeds)"},
    "fid": {"title": "FID", "higher_is_better": False, "model": "inception",
            "note": "Fréchet Inception Distance of generated images to the subject's photos"},
    "is": {"title": "IS", "higher_is_better": True, "model": "inception",
           "note": "Inception Score of the generated images"},
    "toy_subject": {"title": "Subject (toy)", "higher_is_better": True, "model": "toy",
                    "note": "share of images in which the toy evaluator finds the subject (shape, colour, markings)"},
    "toy_match": {"title": "Match (toy)", "higher_is_better": True, "model": "toy",
                  "note": "mean subject-match score 0–1 of the best object (shape, colour and marking scores)"},
    "toy_prompt": {"title": "Prompt (toy)", "higher_is_better": True, "model": "toy",
                   "note": "share of images whose objects and background match what the prompt names"},
}
FEATURE_MODELS = ("clip", "dino", "inception", "lpips")
# The toy world's demo subjects (engine/toy/subjects.py): the toy evaluator can score these only.
TOY_SUBJECT_NAMES = ("Dotty", "Stripe", "Smiley")
# Hub defaults when online: the DreamBooth protocol's DINO, a common CLIP.
DEFAULT_FEATURE_MODELS = {"clip": "openai/clip-vit-base-patch32", "dino": "facebook/dino-vits16"}
# Fewer images than this make FID/IS noise, not a measurement: the table says so beside the number.
MIN_IMAGES_FID = 50
MIN_IMAGES_IS = 50


def _columns(value: list) -> str | None:
    keys = set()
    for i, column in enumerate(value):
        if not isinstance(column, dict):
            return f"[{i}] must be an object"
        unknown = set(column) - {"key", "label", "adapter"}
        if unknown:
            return f"[{i}] has unknown field(s) {sorted(unknown)}"
        key = column.get("key")
        if not isinstance(key, str) or not COLUMN_KEY.match(key):
            return f"[{i}].key must be 1-40 letters, digits, '-' or '_' (it names a folder)"
        if key in keys:
            return f"[{i}].key {key!r} is used twice"
        keys.add(key)
        if not isinstance(column.get("label", ""), str) or len(column.get("label", "")) > 200:
            return f"[{i}].label must be a string of at most 200 characters"
        adapter = column.get("adapter")
        if adapter is not None:
            problem = _adapter(adapter) if isinstance(adapter, dict) else "must be an object or null"
            if problem:
                return f"[{i}].adapter {problem}"
    return None if value else "needs at least one column"


def _seeds(value: list) -> str | None:
    if not value:
        return "needs at least one seed"
    if len(set(value)) != len(value):
        return "has a seed twice"
    return None if all(0 <= v < 2**32 for v in value) else "must be integers from 0 to 2³²-1"


def _prompts(value: list) -> str | None:
    if not value:
        return "needs at least one prompt"
    return None if all(p.strip() and len(p) <= 500 for p in value) else "must be non-empty, ≤ 500 characters each"


def _metric_names(value: list) -> str | None:
    unknown = [m for m in value if m not in METRICS]
    return f"has unknown metric(s) {unknown}; known: {', '.join(METRICS)}" if unknown else None


def _feature_models(value: dict) -> str | None:
    for name, source in value.items():
        if name not in FEATURE_MODELS:
            return f"has unknown feature model {name!r}; known: {', '.join(FEATURE_MODELS)}"
        if not isinstance(source, str) or len(source) > 4096:
            return f"[{name!r}] must be a folder, a file or a hub id"
    return None


GALLERY_PARAMS: dict[str, Field] = {
    "columns": Field(list, required=True, max_len=MAX_COLUMNS, check=_columns),
    "prompts": Field(list, required=True, max_len=MAX_PROMPTS, item=str, check=_prompts),
    "token": Field(str, default="", max_len=60),
    "class_noun": Field(str, default="", max_len=60),
    "seeds": Field(list, required=True, max_len=MAX_SEEDS, item=int, check=_seeds),
    # Also made per column and seed, without the token: the class prior as each run now draws it (PRES).
    "prior_prompt": Field(str, default="", max_len=500),
    "negative_prompt": Field(str, default="", max_len=2000),
    "steps": Field(int, default=25, minimum=1, maximum=500),
    "guidance": Field((int, float), default=7.5, minimum=0.0, maximum=50.0),
    "width": Field(int, default=None, minimum=64, maximum=2048),
    "height": Field(int, default=None, minimum=64, maximum=2048),
    "scheduler": Field(str, default="ddim", choices=SCHEDULERS),
    "batch": Field(int, default=4, minimum=1, maximum=64),  # images per pipeline call
    "out_dir": Field(str, required=True, max_len=4096),
}

EVALUATE_PARAMS: dict[str, Field] = {
    "gallery": Field(str, required=True, max_len=4096),  # a gallery folder or its gallery.json
    "real_images": Field(list, default=None, max_len=500, item=str),  # the subject's photos
    "metrics": Field(list, default=None, max_len=len(METRICS), item=str, check=_metric_names),  # default: all
    "feature_models": Field(dict, default=None, check=_feature_models),  # {"clip": folder|hub id, …}
    "toy_subject": Field(str, default="", max_len=60),  # a toy-world subject's name: the toy scores
    "out": Field(str, default="", max_len=4096),  # default: <gallery>/evaluation.json
}


def fill_template(template: str, token: str, class_noun: str) -> str:
    return " ".join(template.replace("{token}", token).replace("{class}", class_noun).split())


def image_file(column: str, row: int, seed: int) -> str:
    """Where a cell's image lives in the gallery folder (row -1: the prior prompt)."""
    return f"{column}/prior-s{seed}.png" if row < 0 else f"{column}/r{row:02d}-s{seed}.png"
