"""What a finished run leaves behind, in the formats other tools load.

=========== ======================================= ==========================================
method      files                                   loaded by
=========== ======================================= ==========================================
lora        pytorch_lora_weights.safetensors        diffusers ``load_lora_weights(folder)``
            <slug>-kohya.safetensors                A1111 / ComfyUI / kohya; diffusers too
ti          <slug>.safetensors (``emb_params``)     A1111 / ComfyUI embeddings; diffusers too
            learned_embeds.safetensors              diffusers ``load_textual_inversion``
pivotal     the two LoRA files + the two embedding files (the LoRA expects the new word)
dreambooth  model/ (diffusers folder)               ``StableDiffusionPipeline.from_pretrained``
            <slug>.safetensors (original layout)    A1111 / ComfyUI checkpoints, ``from_single_file``
all         README.md (model card), run_config.json
=========== ======================================= ==========================================

Called at the end of ``Trainer.train_loop`` while the LoRA is still injected (before ``restore()``).
Every file is written to a temp name and renamed, so a crash never leaves a half export.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from engine.protocol.names import is_windows_device
from engine.train import methods
from engine.train.ldm_convert import save_atomic, save_pipeline_single_file

DIFFUSERS_LORA = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
DIFFUSERS_EMBEDDING = "learned_embeds.safetensors"  # diffusers' TEXT_INVERSION_NAME_SAFE
MODEL_FOLDER = "model"


def token_slug(token: str) -> str:
    """A file-name-safe form of the token ("<dotty-star>" → "dotty-star"); A1111 and ComfyUI call an
    embedding by its file name, so this is also the word to type there."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", token).strip("-_")[:80] or "subject"
    # "nul.safetensors" / "con.safetensors" are devices on Windows: the export would vanish there
    return f"{slug}-subject" if is_windows_device(slug) else slug


def export_run(trainer, folder: Path) -> list[dict]:
    from engine.train import model_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    method, slug = trainer.spec.method, token_slug(trainer.spec.token)
    exports: list[dict] = []
    if method in ("lora", "pivotal"):
        exports += export_lora(trainer, folder, slug)
    if method in ("ti", "pivotal"):
        exports += export_embedding(trainer, folder, slug)
    if method == "dreambooth":
        exports += export_dreambooth(trainer, folder, slug)
    summary = run_summary(trainer)
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    exports.append(_entry(write_text_atomic(folder / "run_config.json", text), "run_config"))
    card = model_card.render(summary, exports, slug)
    exports.append(_entry(write_text_atomic(folder / "README.md", card), "model_card"))
    return exports


def _entry(path: Path, fmt: str) -> dict:
    return {"path": str(path), "format": fmt}


def write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_summary(trainer) -> dict:
    """Everything the run was: what run_config.json holds and the model card is written from."""
    spec, loaded = trainer.spec, trainer.loaded
    losses = trainer.history.get("loss", [])
    tail = [v for _, v in losses[-20:]]  # the same window the loop reports as final_loss
    return {
        "method": spec.method,
        "token": spec.token,
        "class_noun": spec.class_noun,
        "base_model": {"name": loaded.ref.name, "location": loaded.ref.location, "kind": loaded.ref.kind},
        "base_model_version": base_model_version(trainer.pipe.unet),
        "instance_prompt": trainer.instance_prompt,
        "word_vectors": len(trainer.trainables.token_ids),
        "class_prompt": trainer.class_prompt if trainer.uses_prior else None,
        "images": [str(p) for p in spec.images],
        "resolution": trainer.resolution,
        "steps": trainer.config["steps"],
        "final_loss": round(sum(tail) / len(tail), 6) if tail else None,
        "last_loss": losses[-1][1] if losses else None,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": dict(spec.config),
    }


def base_model_version(unet) -> str:
    """kohya's ss_base_model_version: SD 2.x conditions on 1024-wide OpenCLIP, SD 1.x on 768 CLIP."""
    return "sd_v2" if unet.config.cross_attention_dim == 1024 else "sd_v1"


# ------------------------------------------------------------------------------------------ LoRA
def export_lora(trainer, folder: Path, slug: str) -> list[dict]:
    unet = trainer.trainables.unet
    state = {k: v.detach().cpu().float().contiguous() for k, v in methods.lora_state_dict(unet).items()}
    config = unet.peft_config[methods.ADAPTER]
    return [
        _entry(save_diffusers_lora(state, config, folder), "diffusers_lora"),
        _entry(save_kohya_lora(state, float(config.lora_alpha), folder / f"{slug}-kohya.safetensors",
                               kohya_metadata(trainer, slug)), "kohya_lora"),
    ]


def save_diffusers_lora(peft_state: dict, config, folder: Path) -> Path:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    # The adapter config rides in the header: without it diffusers assumes alpha == rank and a run
    # trained at another alpha would load at the wrong strength. Only the fields that shape the
    # layers, so that other peft versions can build a LoraConfig from it.
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
                "lora_dropout": 0.0, "bias": "none", "use_dora": False}
    final = folder / DIFFUSERS_LORA
    tmp_name = f".{DIFFUSERS_LORA}.{os.getpid()}.tmp"
    try:
        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=convert_state_dict_to_diffusers(peft_state), weight_name=tmp_name,
            safe_serialization=True, unet_lora_adapter_metadata=metadata,
        )
        os.replace(folder / tmp_name, final)
    finally:
        (folder / tmp_name).unlink(missing_ok=True)
    return final


def kohya_state_dict(peft_state: dict, alpha: float) -> dict[str, torch.Tensor]:
    """PEFT UNet LoRA → kohya keys (``lora_unet_<module_path>.lora_down/lora_up.weight``, ``.alpha``)."""
    from diffusers.utils import convert_state_dict_to_kohya

    out = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft_state.items()})
    # diffusers writes alpha = rank (scale 1); the layers were trained at scale alpha / rank
    for key in out:
        if key.endswith(".alpha"):
            out[key] = torch.tensor(alpha, dtype=torch.float32)
    return out


def kohya_metadata(trainer, slug: str) -> dict[str, str]:
    """The ``ss_*`` header fields kohya's sd-scripts write; A1111 and ComfyUI show them, and A1111
    lists ss_tag_frequency as the LoRA's trigger words. Values are strings (safetensors metadata)."""
    cfg, spec = trainer.config, trainer.spec
    version = base_model_version(trainer.pipe.unet)
    res = trainer.resolution
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg["rank"]),
        "ss_network_alpha": str(float(cfg["alpha"])),
        "ss_base_model_version": version,
        "ss_v2": str(version == "sd_v2"),
        "ss_sd_model_name": trainer.loaded.ref.name,
        "ss_output_name": f"{slug}-kohya",
        "ss_training_comment": (
            f"Subject2Subject {spec.method}: {spec.token} ({spec.class_noun}); prompt “{trainer.instance_prompt}”"
            + (f"; load the embedding {slug}.safetensors too" if spec.method == "pivotal" else "")
        ),
        "ss_steps": str(cfg["steps"]),
        "ss_max_train_steps": str(cfg["steps"]),
        "ss_learning_rate": str(cfg["learning_rate"]),
        "ss_unet_lr": str(cfg["learning_rate"]),
        "ss_lr_warmup_steps": str(cfg["lr_warmup_steps"]),
        "ss_lr_scheduler": cfg["lr_schedule"],
        "ss_batch_size_per_device": str(cfg["batch"]),
        "ss_resolution": str((res, res)),
        "ss_num_train_images": str(len(spec.images)),
        "ss_seed": str(cfg["seed"]),
        "ss_noise_offset": str(cfg["offset_noise"]),
        "ss_min_snr_gamma": str(cfg["min_snr_gamma"]),
        "ss_prior_loss_weight": str(cfg["prior_weight"] if trainer.uses_prior else 0.0),
        "ss_max_grad_norm": str(cfg["max_grad_norm"]),
        "ss_mixed_precision": str(cfg["mixed_precision"]),
        "ss_gradient_checkpointing": str(cfg["gradient_checkpointing"]),
        "ss_flip_aug": str(cfg["flip"]),
        "ss_tag_frequency": json.dumps({slug: {trainer.instance_prompt: len(spec.images)}}, ensure_ascii=False),
        "ss_training_finished_at": str(time.time()),
        **_kohya_network_args(cfg),
    }


def _kohya_network_args(cfg: dict) -> dict[str, str]:
    """kohya records LoRA on convolutions (LoCon) as network args conv_dim/conv_alpha."""
    if cfg.get("lora_layers", "attention") == "attention":
        return {}
    args = {"conv_dim": str(cfg["rank"]), "conv_alpha": str(float(cfg["alpha"])), "lora_layers": cfg["lora_layers"]}
    return {"ss_network_args": json.dumps(args)}


def save_kohya_lora(peft_state: dict, alpha: float, path: Path, metadata: dict[str, str]) -> Path:
    return save_atomic(kohya_state_dict(peft_state, alpha), path, {"format": "pt", **metadata})


# ------------------------------------------------------------------------------------ embeddings
def trained_embedding(trainer) -> torch.Tensor:
    """The new word's rows, [n_vectors, dim] (one vector per token id)."""
    trainables = trainer.trainables
    weight = trainables.text_encoder.get_input_embeddings().weight
    return weight[trainables.token_ids].detach().cpu().float().contiguous()


def export_embedding(trainer, folder: Path, slug: str) -> list[dict]:
    emb, token = trained_embedding(trainer), trainer.spec.token
    header = {"format": "pt", "token": token, "class_noun": trainer.spec.class_noun,
              "base_model": trainer.loaded.ref.name, "step": str(trainer.config["steps"])}
    # A1111 and ComfyUI read ``emb_params`` [n_vectors, dim] and call the word by the file name;
    # diffusers' own format maps the token to its vector ([dim] for a one-vector word).
    a1111 = save_atomic({"emb_params": emb}, folder / f"{slug}.safetensors", header)
    diffusers_emb = save_atomic({token: emb[0] if len(emb) == 1 else emb}, folder / DIFFUSERS_EMBEDDING, header)
    return [_entry(a1111, "a1111_embedding"), _entry(diffusers_emb, "diffusers_embedding")]


# ------------------------------------------------------------------------------------ DreamBooth
def dreambooth_pipeline(trainer):
    """The base model's components with the trained UNet, and the model's own scheduler.

    One dtype throughout, the trained UNet's (float32): a half-precision base (CUDA) is upcast, which
    is lossless, where casting the UNet down would round away small fine-tuning updates; and a file
    with mixed dtypes fails at inference in loaders that keep the stored dtypes."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    base, loaded, unet = trainer.pipe, trainer.loaded, trainer.trainables.unet
    scheduler_class = getattr(loaded, "base_scheduler_class", DDIMScheduler)
    return StableDiffusionPipeline(
        vae=_in_dtype(base.vae, unet.dtype), text_encoder=_in_dtype(base.text_encoder, unet.dtype),
        tokenizer=base.tokenizer, unet=unet, scheduler=scheduler_class.from_config(loaded.base_scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` itself when already in ``dtype``, else a CPU copy in it (the loaded base model is
    shared with generation and stays as it is)."""
    if module.dtype == dtype:
        return module
    return copy.deepcopy(module).to(device="cpu", dtype=dtype)


def export_dreambooth(trainer, folder: Path, slug: str) -> list[dict]:
    pipe = dreambooth_pipeline(trainer)
    final = folder / MODEL_FOLDER
    tmp = folder / f".{MODEL_FOLDER}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    single = save_pipeline_single_file(pipe, folder / f"{slug}.safetensors")
    return [_entry(final, "diffusers_model"), _entry(single, "single_file")]
