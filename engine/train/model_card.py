"""The README.md (model card) written beside a run's exports: what was trained, on what, and how to
use each file in diffusers, AUTOMATIC1111 and ComfyUI. Built from ``export.run_summary``."""

from __future__ import annotations

import json
from pathlib import Path

from engine.protocol.training import METHOD_TITLES

FILE_BLURBS = {
    "diffusers_lora": "LoRA, diffusers format",
    "kohya_lora": "LoRA, kohya format (AUTOMATIC1111, ComfyUI, kohya's sd-scripts)",
    "a1111_embedding": "embedding, AUTOMATIC1111 / ComfyUI format",
    "diffusers_embedding": "embedding, diffusers format",
    "diffusers_model": "the whole model, diffusers folder",
    "single_file": "the whole model, one checkpoint file (AUTOMATIC1111, ComfyUI)",
    "run_config": "every training setting, as JSON",
}


def render(summary: dict, exports: list[dict], slug: str) -> str:
    method, token, cfg = summary["method"], summary["token"], summary["config"]
    files = {e["format"]: Path(e["path"]).name for e in exports}
    prompt = summary["instance_prompt"]
    # A1111/ComfyUI name an embedding by its file: there the word is the slug, not the token
    word_prompt = prompt.replace(token, slug) if method in ("ti", "pivotal") else prompt
    lines = [
        "---",
        f"base_model: {json.dumps(summary['base_model']['name'])}",
        f"instance_prompt: {json.dumps(prompt, ensure_ascii=False)}",
        "tags: [stable-diffusion, text-to-image, subject2subject, " + method + "]",
        "---",
        "",
        f"# {token} ({summary['class_noun']}): {METHOD_TITLES[method]}",
        "",
        f"Trained with Subject2Subject; exported {summary['exported_at']}.",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | {summary['base_model']['name']} (`{summary['base_model']['location']}`) |",
        f"| Method | {METHOD_TITLES[method]} |",
        f"| Token | `{token}` |",
        f"| Class noun | {summary['class_noun']} |",
        f"| Instance prompt | `{prompt}` |",
        f"| Training images | {len(summary['images'])} |",
        f"| Resolution | {summary['resolution']} px |",
        f"| Steps | {summary['steps']} (batch {cfg['batch']}) |",
        *_rate_rows(method, cfg, summary.get("word_vectors", 1)),
        f"| Prior preservation | {_prior(summary)} |",
        f"| Final loss | {summary['final_loss']} (mean of the last 20 steps; last step {summary['last_loss']}) |",
        f"| Seed | {cfg['seed']} |",
        "",
        "## Files",
        "",
        *[f"- `{name}`: {FILE_BLURBS[fmt]}" for fmt, name in files.items() if fmt in FILE_BLURBS],
        "- `README.md`: this card",
        "",
        "## Use",
        "",
        *USAGE[method](files, token, slug, prompt, word_prompt),
    ]
    return "\n".join(lines) + "\n"


def _rate_rows(method: str, cfg: dict, vectors: int) -> list[str]:
    rows = []
    if method != "ti":
        rows.append(f"| Learning rate | {cfg['learning_rate']} |")
    if method in ("ti", "pivotal"):
        rows.append(f"| Embedding learning rate | {cfg['embedding_learning_rate']} |")
        if vectors != 1:
            how = ", one per piece of the start word" if not cfg.get("word_vectors", 1) else ""
            rows.append(f"| Word vectors | {vectors}{how} (start: {cfg.get('init_word') or 'the class noun'}) |")
    if method in ("lora", "pivotal"):
        rows.append(f"| LoRA rank / alpha | {cfg['rank']} / {cfg['alpha']} |")
    return rows


def _prior(summary: dict) -> str:
    cfg = summary["config"]
    if not summary["class_prompt"]:
        return "off"
    return f"{cfg['class_images']} class images of “{summary['class_prompt']}”, weight {cfg['prior_weight']}"


def _code(*lines: str) -> list[str]:
    return ["```python", *lines, "```", ""]


def _lora_usage(files, token, slug, prompt, word_prompt) -> list[str]:
    kohya = Path(files["kohya_lora"]).stem
    return [
        "### diffusers", "",
        *_code(
            "pipe = StableDiffusionPipeline.from_pretrained(BASE_MODEL)",
            'pipe.load_lora_weights("path/to/this/folder")  # pytorch_lora_weights.safetensors',
            f'# or the kohya file: pipe.load_lora_weights("path/to/this/folder/{files["kohya_lora"]}")',
            f"image = pipe({json.dumps(prompt, ensure_ascii=False)}).images[0]",
        ),
        "### AUTOMATIC1111",
        "",
        f"Copy `{files['kohya_lora']}` into `models/Lora/` and add `<lora:{kohya}:1>` to the prompt: "
        f"`{prompt} <lora:{kohya}:1>`.",
        "",
        "### ComfyUI",
        "",
        f"Copy `{files['kohya_lora']}` into `models/loras/`, put a *Load LoRA* node after *Load Checkpoint* "
        f"(the base model) and prompt `{prompt}`.",
        "",
    ]


def _ti_usage(files, token, slug, prompt, word_prompt) -> list[str]:
    return [
        "### diffusers", "",
        *_code(
            "pipe = StableDiffusionPipeline.from_pretrained(BASE_MODEL)",
            f'pipe.load_textual_inversion("path/to/this/folder/{files["diffusers_embedding"]}", '
            f"token={json.dumps(token)})",
            f'# or the A1111 file: pipe.load_textual_inversion(".../{files["a1111_embedding"]}", '
            f"token={json.dumps(token)})",
            f"image = pipe({json.dumps(prompt, ensure_ascii=False)}).images[0]",
        ),
        "### AUTOMATIC1111",
        "",
        f"Copy `{files['a1111_embedding']}` into `embeddings/`; the word is the file name: `{word_prompt}`.",
        "",
        "### ComfyUI",
        "",
        f"Copy `{files['a1111_embedding']}` into `models/embeddings/` and write "
        f"`{word_prompt.replace(slug, 'embedding:' + slug)}`.",
        "",
    ]


def _pivotal_usage(files, token, slug, prompt, word_prompt) -> list[str]:
    kohya = Path(files["kohya_lora"]).stem
    return [
        "The LoRA was trained together with the new word: load both, the embedding first.",
        "",
        "### diffusers", "",
        *_code(
            "pipe = StableDiffusionPipeline.from_pretrained(BASE_MODEL)",
            f'pipe.load_textual_inversion("path/to/this/folder/{files["diffusers_embedding"]}", '
            f"token={json.dumps(token)})",
            'pipe.load_lora_weights("path/to/this/folder")',
            f"image = pipe({json.dumps(prompt, ensure_ascii=False)}).images[0]",
        ),
        "### AUTOMATIC1111",
        "",
        f"Copy `{files['a1111_embedding']}` into `embeddings/` and `{files['kohya_lora']}` into `models/Lora/`, "
        f"then prompt `{word_prompt} <lora:{kohya}:1>`.",
        "",
        "### ComfyUI",
        "",
        f"Copy `{files['a1111_embedding']}` into `models/embeddings/` and `{files['kohya_lora']}` into "
        f"`models/loras/`, add a *Load LoRA* node, and prompt `{word_prompt.replace(slug, 'embedding:' + slug)}`.",
        "",
    ]


def _dreambooth_usage(files, token, slug, prompt, word_prompt) -> list[str]:
    return [
        "### diffusers", "",
        *_code(
            f'pipe = StableDiffusionPipeline.from_pretrained("path/to/this/folder/{files["diffusers_model"]}")',
            f"image = pipe({json.dumps(prompt, ensure_ascii=False)}).images[0]",
            f'# or the single file: StableDiffusionPipeline.from_single_file(".../{files["single_file"]}")',
        ),
        "### AUTOMATIC1111",
        "",
        f"Copy `{files['single_file']}` into `models/Stable-diffusion/`, choose it as the checkpoint and "
        f"prompt `{prompt}`.",
        "",
        "### ComfyUI",
        "",
        f"Copy `{files['single_file']}` into `models/checkpoints/` and pick it in *Load Checkpoint*.",
        "",
    ]


USAGE = {"lora": _lora_usage, "ti": _ti_usage, "pivotal": _pivotal_usage, "dreambooth": _dreambooth_usage}
