"""Putting a subject into pictures, measured: the ``evaluate_insertion`` job's parameters, its
metrics and the file it writes (stdlib only: the GUI and the CLI build and read these without torch).

For every run × source picture the job runs the real insertion edit (the edit job, the run on the
edited branch only, ``INSERTION_DEFAULTS``), then scores each run over its edits:

    subject_rate    toy world only: share of edits in which the toy evaluator finds the subject
    object_iou      toy world only: median IoU of the source object's mask and the edit's object
    structure       PIE-Bench's structure distance ×10³: MSE between the DINO ViT self-similarity
                    (cosine of the last layer's keys) of source and edit; needs a DINO model
    psnr_outside    median dB between source and edit outside the edited area
    lpips_outside   mean LPIPS between source and edit with the edited area blacked out in both
                    (PIE-Bench's background LPIPS); needs the LPIPS backbone
    clip_i          mean CLIP image similarity of the edits to the subject's photos

The edited area: on the toy world the union of the source's object and the edit's object (the toy
evaluator's masks); on any other model the union of the swapped words' cross-attention maps (the
source's replaced word, the target's token and class noun), made the way local blend makes its mask.

Result file (``insertion.json`` in ``out_dir``), the evaluation layout of ``engine.protocol.gallery``
(so the same table, Markdown and CSV code shows it) plus what the report needs:
    {"version", "kind": "insertion", "complete", "token", "class_noun", "into", "area",
     "settings": {...}, "sources": [{"prompt", "target", "seed" | "image"}…], "real_images": n,
     "metrics": [{"name", "title", "higher_is_better", "model", "note"}…],
     "rows": [{"column", "label", "scores": {name: SCORE},
               "edits": [{"source", "original", "edited", "area", "present", "iou", "psnr_outside"}…]}…],
     "best": null}
    SCORE as in the gallery evaluation: {"value", "n", "warning"?} or {"value": null, "unavailable"}.
    Edit files are relative to ``out_dir``; a cancelled job leaves the file with "complete": false.
"""

from __future__ import annotations

from engine.protocol import Field
from engine.protocol.editing import INSERTION_DEFAULTS, INVERSIONS, _schedule
from engine.protocol.gallery import MAX_COLUMNS, _columns, _feature_models

INSERTION_NAME = "insertion.json"
INSERTION_VERSION = 1
MAX_SOURCES = 64

INSERTION_METRICS: dict[str, dict] = {
    "subject_rate": {"title": "Subject in (toy)", "higher_is_better": True, "model": "toy",
                     "note": "share of edits in which the toy evaluator finds the subject (shape, colour, markings)"},
    "object_iou": {"title": "Layout IoU (toy)", "higher_is_better": True, "model": "toy",
                   "note": "median IoU of the edited object's mask with the source object's (the layout kept)"},
    "structure": {"title": "Structure dist.", "higher_is_better": False, "model": "dino",
                  "note": "PIE-Bench structure distance ×10³: MSE between the DINO ViT self-similarities "
                          "(cosine of the last layer's keys) of source and edit"},
    "psnr_outside": {"title": "PSNR outside", "higher_is_better": True, "model": "",
                     "note": "median dB between source and edit outside the edited area (the rest kept)"},
    "lpips_outside": {"title": "LPIPS outside", "higher_is_better": False, "model": "lpips",
                      "note": "mean LPIPS between source and edit with the edited area blacked out in both"},
    "clip_i": {"title": "CLIP-I", "higher_is_better": True, "model": "clip",
               "note": "mean cosine similarity of the edits to the subject's photos (CLIP image embeddings)"},
}

TOY_BACKGROUNDS = ("blue", "white", "gray", "green")
# For a real model: the class noun in a few ordinary scenes (the word the subject takes the place of).
REAL_SOURCE_TEMPLATES = ("a photo of a {class}", "a {class} on a wooden table", "a {class} on the beach",
                         "a {class} in a garden")


def default_source_prompts(class_noun: str, toy: bool) -> list[str]:
    """The source pictures' prompts when none are given: on the toy world a red object of the
    class on four backgrounds (what the insertion settings were measured on), else a few scenes."""
    if toy:
        return [f"a red {class_noun} on a {background} background" for background in TOY_BACKGROUNDS]
    return [t.replace("{class}", class_noun) for t in REAL_SOURCE_TEMPLATES]


def _sources(value: list) -> str | None:
    if not value:
        return "needs at least one source picture"
    for i, source in enumerate(value):
        if not isinstance(source, dict):
            return f"[{i}] must be an object"
        unknown = set(source) - {"prompt", "seed", "image"}
        if unknown:
            return f"[{i}] has unknown field(s) {sorted(unknown)}"
        prompt = source.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 2000 or "\x00" in prompt:
            return f"[{i}].prompt must be the picture's prompt (1-2000 characters)"
        seed = source.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            return f"[{i}].seed must be an integer from 0 to 2³²-1"
        image = source.get("image", "")
        if not isinstance(image, str) or len(image) > 4096 or "\x00" in image:
            return f"[{i}].image must be a picture's path"
    return None


def _metric_names(value: list) -> str | None:
    unknown = [m for m in value if m not in INSERTION_METRICS]
    return f"has unknown metric(s) {unknown}; known: {', '.join(INSERTION_METRICS)}" if unknown else None


EVALUATE_INSERTION_PARAMS: dict[str, Field] = {
    "token": Field(str, required=True, max_len=60),  # the subject's word, as the runs learned it
    "class_noun": Field(str, required=True, max_len=60),
    # The runs compared, as gallery columns: {"key", "label", "adapter"} (adapter null: the base model).
    "runs": Field(list, required=True, max_len=MAX_COLUMNS, check=_columns),
    # {"prompt", "seed"}: generated from the seed; {"prompt", "image"}: that picture, inverted.
    "sources": Field(list, required=True, max_len=MAX_SOURCES, check=_sources),
    "into": Field(str, default="", max_len=60),  # the word the subject replaces; "": the class noun
    "real_images": Field(list, default=None, max_len=500, item=str),  # the subject's photos (CLIP-I)
    "metrics": Field(list, default=None, max_len=len(INSERTION_METRICS), item=str, check=_metric_names),
    "feature_models": Field(dict, default=None, check=_feature_models),
    "toy_subject": Field(str, default="", max_len=60),  # a toy-world subject's name: the toy scores
    "steps": Field(int, default=50, minimum=2, maximum=500),
    "guidance": Field((int, float), default=7.5, minimum=0.0, maximum=50.0),
    "invert": Field(str, default="direct", choices=INVERSIONS),
    "shared_steps": Field((int, float), default=INSERTION_DEFAULTS["shared_steps"], minimum=0.0, maximum=1.0),
    "cross_steps": Field((int, float, list), default=INSERTION_DEFAULTS["cross_steps"], check=_schedule),
    "self_steps": Field((int, float, list), default=INSERTION_DEFAULTS["self_steps"], check=_schedule),
    "blend": Field(bool, default=True),  # local blend on the object's words, as "Put … in" does
    "blend_threshold": Field((int, float), default=INSERTION_DEFAULTS["blend_threshold"], minimum=0.0, maximum=1.0),
    "out_dir": Field(str, required=True, max_len=4096),
}
