"""Putting a trained subject onto the loaded base model without reloading it: a run's LoRA (scale
adjustable), its new word (Textual Inversion), both (pivotal), or its fine-tuned UNet (DreamBooth).

Uses diffusers' own loaders (``load_lora_weights``, ``set_adapters``, ``load_textual_inversion``);
this module only remembers what is on the pipeline, so asking for the same run again costs nothing
and asking for none takes everything off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.jobs import JobFailed
from engine.train.export import DIFFUSERS_EMBEDDING, DIFFUSERS_LORA, MODEL_FOLDER


@dataclass
class AppliedAdapters:
    lora_names: dict = field(default_factory=dict)  # folder → adapter name on the pipeline
    tokens: dict = field(default_factory=dict)  # folder → token added to the tokenizer
    base_unet: object = None  # the base UNet while a DreamBooth UNet is swapped in
    dreambooth_folder: str = ""
    active: tuple = ()


def describe(folder: Path) -> dict:
    """run_config.json of an exported run: its method and token."""
    try:
        summary = json.loads((folder / "run_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFailed(
            f"{folder} is not a finished run's export folder ({exc})",
            "choose a run that finished training (its folder holds run_config.json)",
            code="bad_adapter",
        ) from None
    return summary


def apply(loaded, spec: dict | None) -> tuple:
    """Make the pipeline carry exactly ``spec``'s run (or no run); returns a key for caches."""
    pipe = loaded.pipeline
    state = getattr(loaded, "adapters", None)
    if state is None:
        state = loaded.adapters = AppliedAdapters()
    if spec is None:
        _remove_all(pipe, state)
        return ()
    folder = Path(spec["folder"]).resolve()
    scale = float(spec.get("scale", 1.0))
    summary = describe(folder)
    method = summary.get("method")
    key = (str(folder), (folder / "run_config.json").stat().st_mtime_ns, method, scale)
    if state.active == key:
        return key
    if method == "dreambooth":
        _disable_lora(pipe, state)
        _use_dreambooth(pipe, state, folder)
    else:
        _restore_unet(pipe, state)
        if method in ("lora", "pivotal"):
            _use_lora(pipe, state, folder, scale)
        else:
            _disable_lora(pipe, state)
        if method in ("ti", "pivotal"):
            _add_token(pipe, state, folder, summary.get("token", ""))
    state.active = key
    return key


def _use_lora(pipe, state: AppliedAdapters, folder: Path, scale: float) -> None:
    name = state.lora_names.get(str(folder))
    if name is None:
        if not (folder / DIFFUSERS_LORA).exists():
            raise JobFailed(f"{folder} has no {DIFFUSERS_LORA}", "export the run again", code="bad_adapter")
        name = f"run{len(state.lora_names)}"
        pipe.load_lora_weights(str(folder), weight_name=DIFFUSERS_LORA, adapter_name=name)
        state.lora_names[str(folder)] = name
    pipe.enable_lora()
    pipe.set_adapters([name], adapter_weights=[scale])


def _disable_lora(pipe, state: AppliedAdapters) -> None:
    if state.lora_names:
        pipe.disable_lora()


def _add_token(pipe, state: AppliedAdapters, folder: Path, token: str) -> None:
    if str(folder) in state.tokens or not token:
        return
    if token in pipe.tokenizer.get_vocab():  # another run taught the same word: replace it
        pipe.unload_textual_inversion(token)
        state.tokens = {k: v for k, v in state.tokens.items() if v != token}
    pipe.load_textual_inversion(str(folder / DIFFUSERS_EMBEDDING), token=token)
    state.tokens[str(folder)] = token


def _use_dreambooth(pipe, state: AppliedAdapters, folder: Path) -> None:
    from diffusers import UNet2DConditionModel

    if state.dreambooth_folder == str(folder):
        return
    unet_folder = folder / MODEL_FOLDER / "unet"
    if not unet_folder.is_dir():
        raise JobFailed(f"{folder} has no {MODEL_FOLDER}/unet", "export the run again", code="bad_adapter")
    base = state.base_unet if state.base_unet is not None else pipe.unet
    tuned = UNet2DConditionModel.from_pretrained(unet_folder, use_safetensors=True)
    pipe.unet = tuned.to(device=base.device, dtype=base.dtype)
    state.base_unet, state.dreambooth_folder = base, str(folder)


def _restore_unet(pipe, state: AppliedAdapters) -> None:
    if state.base_unet is not None:
        pipe.unet, state.base_unet, state.dreambooth_folder = state.base_unet, None, ""


def _remove_all(pipe, state: AppliedAdapters) -> None:
    _restore_unet(pipe, state)
    _disable_lora(pipe, state)
    state.active = ()
