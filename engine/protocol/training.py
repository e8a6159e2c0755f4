"""What a training run is configured with, and the presets a user starts from (stdlib only: the GUI
shows presets and validates "Advanced" edits without importing torch).

Recipes from the research this app grew from: full fine-tune lr 5e-6 for 800-1000 steps, LoRA lr
1e-4, Textual Inversion lr 5e-4 for 2000 steps, batch 2, text encoder frozen, prior preservation
with class images "a photo of a [class noun]".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.protocol import TRAIN_METHODS as METHODS
from engine.protocol import ErrorCode, Field, ProtocolError, validate

METHOD_TITLES = {
    "dreambooth": "DreamBooth (full fine-tune)",
    "lora": "DreamBooth-LoRA",
    "ti": "Textual Inversion",
    "pivotal": "Pivotal tuning (new word + LoRA)",
}
METHOD_BLURBS = {
    "dreambooth": "Trains the whole UNet: the most faithful, the most memory (≈ 14 GB on a GPU at 512²), "
    "a 3-4 GB model per subject.",
    "lora": "Trains small low-rank layers beside the UNet's attention: nearly as faithful, a few MB per "
    "subject, fits 8 GB GPUs.",
    "ti": "Learns only a new word's embedding: tiny (a few KB), works with any model of the family, "
    "least faithful to fine details.",
    "pivotal": "Learns a new word's embedding and LoRA layers together: the detail of LoRA, the "
    "portability of a word.",
}
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
# Which UNet layers get LoRA layers (engine/train/methods.py has the module names):
#   attention     — the attention projections, as diffusers' train_dreambooth_lora.py does
#   convolutions  — the ResNet convolutions and the transformer feed-forward layers, attention left
#                   as it is (kohya's LoCon adds these convolutions to attention)
#   all           — both
LORA_LAYERS = ("attention", "convolutions", "all")
LR_SCHEDULES = ("constant", "linear", "cosine")


def _positive_list(value: list) -> str | None:
    return None if all(isinstance(v, int) and v >= 0 for v in value) else "must be non-negative integers"


# Every field a run can set. Prompts may use {token} and {class}.
TRAIN_CONFIG: dict[str, Field] = {
    "steps": Field(int, default=800, minimum=1, maximum=100_000),
    "learning_rate": Field(float, default=1e-4, minimum=1e-8, maximum=1.0),
    "embedding_learning_rate": Field(float, default=5e-4, minimum=1e-8, maximum=1.0),  # ti, pivotal
    "lr_warmup_steps": Field(int, default=0, minimum=0, maximum=100_000),
    # after the warm-up: hold the rate, or decay it to 0 by the last step (diffusers' --lr_scheduler)
    "lr_schedule": Field(str, default="constant", choices=LR_SCHEDULES),
    "batch": Field(int, default=2, minimum=1, maximum=64),
    "rank": Field(int, default=8, minimum=1, maximum=256),  # lora, pivotal
    "alpha": Field(float, default=None, minimum=0.01, maximum=1024.0),  # default: = rank
    "lora_layers": Field(str, default="attention", choices=LORA_LAYERS),  # lora, pivotal
    "resolution": Field(int, default=None, minimum=32, maximum=2048),  # default: the model's native size
    "instance_prompt": Field(str, default="a photo of {token} {class}", max_len=300),
    "prior": Field(bool, default=True),
    "prior_weight": Field(float, default=1.0, minimum=0.0, maximum=100.0),
    "class_prompt": Field(str, default="a photo of a {class}", max_len=300),
    "class_images": Field(int, default=100, minimum=0, maximum=5000),
    "class_image_steps": Field(int, default=25, minimum=1, maximum=200),
    # The prior's targets: the base model's own latents of its class images (cached beside the PNGs),
    # or the PNGs encoded again by the VAE, as diffusers' DreamBooth scripts do
    "prior_on_latents": Field(bool, default=False),
    # The VAE posterior's mean by default: deterministic, and for SD's VAE a sample differs from it by
    # ~0.1%; a VAE with a wide posterior (the toy world's: std 0.99 vs spread 1.26) is hurt by sampling.
    "sample_latents": Field(bool, default=False),
    "flip": Field(bool, default=False),  # off: many subjects are not mirror-symmetric (text on a mug)
    "min_snr_gamma": Field(float, default=0.0, minimum=0.0, maximum=100.0),  # 0 = off
    "offset_noise": Field(float, default=0.0, minimum=0.0, maximum=1.0),
    # ti/pivotal: the new word starts as this word ("" = the class noun; "{token}" = the identifier
    # itself, as the model read it before it was a word)
    "init_word": Field(str, default="", max_len=60),
    # ti/pivotal: embedding vectors of the new word (diffusers' textual_inversion.py --num_vectors);
    # 0 = one per sub-token of the start word
    "word_vectors": Field(int, default=1, minimum=0, maximum=16),
    # pivotal: the word trains with the LoRA for this fraction of the steps, then only the LoRA
    # (diffusers' advanced DreamBooth-LoRA script: --train_text_encoder_ti_frac)
    "word_train_fraction": Field(float, default=1.0, minimum=0.0, maximum=1.0),
    "seed": Field(int, default=0, minimum=0, maximum=2**31 - 1),
    "checkpoint_every": Field(int, default=100, minimum=1, maximum=100_000),
    # How many of the newest checkpoints stay (resume needs one; comparing steps in a gallery wants
    # more). A full fine-tune's checkpoint is the whole UNet plus optimizer state (≈ 10 GB for SD1.5).
    "keep_checkpoints": Field(int, default=2, minimum=1, maximum=1000),
    "sample_every": Field(int, default=100, minimum=0, maximum=100_000),  # 0 = only at the start and end
    "sample_prompts": Field(
        list, default=["a photo of {token} {class}", "a {token} {class} on a blue background"], max_len=8, item=str
    ),
    "sample_seeds": Field(list, default=[0, 1], max_len=8, item=int, check=_positive_list),
    "sample_steps": Field(int, default=25, minimum=1, maximum=200),
    "mixed_precision": Field(str, default="auto", choices=MIXED_PRECISION),
    "gradient_checkpointing": Field(bool, default=False),
    "adam_8bit": Field(bool, default=False),  # bitsandbytes, CUDA only
    "max_grad_norm": Field(float, default=1.0, minimum=0.0, maximum=1000.0),
}

# What each method ignores (hidden in the GUI's Advanced drawer).
UNUSED = {
    "dreambooth": {"rank", "alpha", "lora_layers", "embedding_learning_rate", "init_word", "word_vectors",
                   "word_train_fraction"},
    "lora": {"embedding_learning_rate", "init_word", "word_vectors", "word_train_fraction"},
    "ti": {"rank", "alpha", "lora_layers", "prior", "prior_weight", "class_prompt", "class_images", "class_image_steps",
           "prior_on_latents", "learning_rate", "word_train_fraction"},
    "pivotal": set(),
}


def preset(method: str, n_images: int, device: str = "cpu", toy: bool = False) -> dict:
    """A complete config for ``method`` given the photo count and the device ("cuda", "mps", "cpu").

    ``toy``: the shipped 64-px demo model, which learns in a few hundred steps at a larger batch."""
    if method not in METHODS:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, f"unknown method {method!r}", "methods: " + ", ".join(METHODS))
    config = {name: spec.default for name, spec in TRAIN_CONFIG.items()}
    few = n_images <= 10
    if method != "dreambooth":
        config.update(keep_checkpoints=10)  # small files: every step of the run can be compared later
    if method == "dreambooth":
        config.update(learning_rate=5e-6, steps=800 if few else 1000, class_images=200)
    elif method == "lora":
        config.update(learning_rate=1e-4, steps=500 if few else 800, rank=8, class_images=100)
    elif method == "ti":
        config.update(embedding_learning_rate=5e-4, steps=2000, prior=False, class_images=0)
    else:  # pivotal: the embedding warms up with the LoRA from the start, at TI's rate
        config.update(learning_rate=1e-4, embedding_learning_rate=5e-4, steps=800 if few else 1000, rank=8,
                      class_images=100)
    if device == "cuda":
        config.update(gradient_checkpointing=method == "dreambooth")
    if toy:
        # The toy model's UNet is ~1000× smaller than SD's: higher rates, fewer steps, a bigger batch.
        # Measured with benchmarks/toy_personalize.py (see benchmarks/results/toy-personalize-cpu.md):
        # DreamBooth needs 500 steps to draw the dots (300: subject in 31% of 16 seeds, 500: 81%).
        # LoRA goes on the convolutions: the toy UNet's attention (shaped by an attention loss) breaks
        # under plain noise-prediction loss at every rate tried (subject 0-12%); on the convolutions,
        # rank 32 at 1e-3 draws Dotty in 75% of 32 seeds (rank 16: 59%; 5e-4: 6% of 16).
        config.update(batch=4, class_images=64, class_image_steps=20, checkpoint_every=100, sample_every=100)
        config.update(
            {
                "dreambooth": dict(learning_rate=1e-4, steps=500),
                "lora": dict(learning_rate=1e-3, steps=500, rank=32, lora_layers="convolutions"),
                "ti": dict(embedding_learning_rate=5e-3, steps=400),
                # Pivotal: the same LoRA, and a word that starts as the identifier's own pieces (so step 0
                # is the LoRA's prompt) and moves slowly: the toy token table's spread is 0.02, and
                # the toy model's cross-attention, which the word feeds, breaks as its attention
                # weights do. Dotty in 32 seeds: word rate 2e-5 72%, 1e-4 50%, 5e-4 47%; a
                # one-vector word from "star" 31-38% at 5e-4-5e-3 (random start, 4 vectors: no better).
                "pivotal": dict(learning_rate=1e-3, embedding_learning_rate=2e-5, steps=500, rank=32,
                                lora_layers="convolutions", init_word="{token}", word_vectors=0),
            }[method]
        )
        config["sample_prompts"] = ["a photo of {token} {class}", "a photo of {token} {class} on a blue background"]
    return config


def validate_config(config: dict | None) -> dict:
    """Fill defaults and check every field; unknown fields are refused (a typo must not be ignored)."""
    out = validate(config or {}, TRAIN_CONFIG, where="config")
    if out["alpha"] is None:
        out["alpha"] = float(out["rank"])
    return out


def fill_prompt(template: str, token: str, class_noun: str) -> str:
    return " ".join(template.replace("{token}", token).replace("{class}", class_noun).split())


# ------------------------------------------------------------------------------ headless launch file
LAUNCH_VERSION = 1


def write_launch(folder: Path, model_params: dict, job_params: dict) -> Path:
    """Write RUN.json (validated, so a bad run fails here and not on the cluster)."""
    from engine import protocol

    protocol.validate_method_params("load_model", model_params)
    job = protocol.validate_job("train", job_params)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": LAUNCH_VERSION, "model": model_params, "job": job}, indent=2))
    os.replace(tmp, path)
    return path


def read_launch(path: Path) -> tuple[dict, dict]:
    from engine import protocol

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != LAUNCH_VERSION:
        raise ValueError(f"{path}: launch file version {data.get('version')!r}, this engine reads {LAUNCH_VERSION}")
    model = protocol.validate_method_params("load_model", data["model"])
    job = protocol.validate_job("train", data["job"])
    return model, job


def launch_commands(path: Path) -> list[str]:
    """How to run a launch file: one process, several GPUs, or plain torchrun."""
    return [
        f"python -m engine.train.headless {path}",
        f"accelerate launch --multi_gpu --num_processes NUM_GPUS -m engine.train.headless {path}",
        f"torchrun --nproc_per_node NUM_PROCESSES -m engine.train.headless {path}",
    ]
