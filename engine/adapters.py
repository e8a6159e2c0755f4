"""Putting a trained subject onto the loaded base model without reloading it: a run's LoRA (scale
adjustable), its new word (Textual Inversion), both (pivotal), or its fine-tuned UNet (DreamBooth).

Uses diffusers' own loaders (``load_lora_weights``, ``set_adapters``, ``load_textual_inversion``);
this module only remembers what is on the pipeline, so asking for the same run again costs nothing
and asking for none takes everything off.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine.jobs import JobFailed
from engine.models.registry import check_safetensors_header
from engine.train.export import DIFFUSERS_EMBEDDING, DIFFUSERS_LORA, MODEL_FOLDER
from engine.words import tokens_of_word


@dataclass
class AppliedAdapters:
    lora_names: dict = field(default_factory=dict)  # folder → adapter name on the pipeline
    tokens: dict = field(default_factory=dict)  # folder → token added to the tokenizer
    base_unet: object = None  # the base UNet while a DreamBooth UNet is swapped in
    dreambooth_folder: str = ""
    active: tuple = ()
    method: str = ""  # of the active run ("" when none)
    token: str = ""  # the active run's identifier
    lora_name: str = ""  # the active run's adapter name on the pipeline (LoRA, pivotal)


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
    if spec.get("checkpoint"):
        folder = checkpoint_adapter(loaded, folder, Path(spec["checkpoint"]).resolve())
    summary = describe(folder)
    method = summary.get("method")
    key = (str(folder), (folder / "run_config.json").stat().st_mtime_ns, method, scale)
    if state.active == key:
        return key
    state.active, state.method, state.lora_name = (), "", ""  # until the new run is on
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
            _drop_tokens(pipe, state, keep=str(folder))
            _add_token(pipe, state, folder, summary.get("token", ""))
        else:
            _drop_tokens(pipe, state)
    if method == "dreambooth":
        _drop_tokens(pipe, state)
    state.active, state.method, state.token = key, method, summary.get("token", "")
    return key


ADAPTER_FOLDER = "adapter"  # inside a checkpoint folder: its weights in the export formats, made once


def checkpoint_adapter(loaded, exports: Path, checkpoint: Path) -> Path:
    """A training checkpoint (``…/checkpoints/step-N``) in the same layout as the run's exports, so
    it loads through the same diffusers loaders. Written once, temp-then-rename, beside the
    checkpoint; a checkpoint holds only what trains (LoRA layers, the word's rows, or the UNet)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from engine.train.export import save_diffusers_lora, write_text_atomic
    from engine.train.methods import lora_targets

    target = checkpoint / ADAPTER_FOLDER
    if (target / "run_config.json").is_file():
        return target
    weights = checkpoint / "trainable.safetensors"
    if not weights.is_file() or not (checkpoint / "state.json").is_file():
        raise JobFailed(f"{checkpoint} is not a complete training checkpoint", "choose another checkpoint",
                        code="bad_adapter")
    summary = describe(exports)
    method, config = summary.get("method"), summary.get("config", {})
    check_safetensors_header(weights, str(weights))
    state = load_file(str(weights))
    tmp = checkpoint / f".{ADAPTER_FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    unet_state = {k[5:]: v for k, v in state.items() if k.startswith("unet.")}
    if method in ("lora", "pivotal"):
        from types import SimpleNamespace

        lora_config = SimpleNamespace(r=int(config.get("rank", 8)), lora_alpha=float(config.get("alpha") or config.get("rank", 8)),
                                      target_modules=lora_targets(config.get("lora_layers")))
        save_diffusers_lora({k: v.float() for k, v in unet_state.items()}, lora_config, tmp)
    if method in ("ti", "pivotal") and "embeddings" in state:
        emb = state["embeddings"].float()
        save_file({summary["token"]: emb[0] if len(emb) == 1 else emb}, str(tmp / DIFFUSERS_EMBEDDING))
    if method == "dreambooth":
        import copy

        base = getattr(loaded, "adapters", None)
        base_unet = base.base_unet if base is not None and base.base_unet is not None else loaded.pipeline.unet
        tuned = copy.deepcopy(base_unet).to(device="cpu", dtype=torch.float32)
        tuned.load_state_dict(unet_state)
        tuned.save_pretrained(tmp / MODEL_FOLDER / "unet", safe_serialization=True)
        del tuned
    step = json.loads((checkpoint / "state.json").read_text(encoding="utf-8")).get("step")
    write_text_atomic(tmp / "run_config.json", json.dumps(dict(summary, checkpoint_step=step), indent=2))
    os.replace(tmp, target)
    return target


def _use_lora(pipe, state: AppliedAdapters, folder: Path, scale: float) -> None:
    name = state.lora_names.get(str(folder))
    if name is None:
        if not (folder / DIFFUSERS_LORA).exists():
            raise JobFailed(f"{folder} has no {DIFFUSERS_LORA}", "export the run again", code="bad_adapter")
        name = f"run{len(state.lora_names)}"
        check_safetensors_header(folder / DIFFUSERS_LORA, str(folder / DIFFUSERS_LORA))  # says why, unlike diffusers
        pipe.load_lora_weights(str(folder), weight_name=DIFFUSERS_LORA, adapter_name=name)
        state.lora_names[str(folder)] = name
    pipe.enable_lora()
    pipe.set_adapters([name], adapter_weights=[scale])
    state.lora_name = name


def _disable_lora(pipe, state: AppliedAdapters) -> None:
    if state.lora_names:
        pipe.disable_lora()


def _add_token(pipe, state: AppliedAdapters, folder: Path, token: str) -> None:
    if str(folder) in state.tokens or not token:
        return
    if token in pipe.tokenizer.get_vocab():  # another run taught the same word: replace it
        _unload_word(pipe, token)
        state.tokens = {k: v for k, v in state.tokens.items() if v != token}
    check_safetensors_header(folder / DIFFUSERS_EMBEDDING, str(folder / DIFFUSERS_EMBEDDING))
    pipe.load_textual_inversion(str(folder / DIFFUSERS_EMBEDDING), token=token)
    state.tokens[str(folder)] = token


def _drop_tokens(pipe, state: AppliedAdapters, keep: str = "") -> None:
    """Take other runs' words off the tokenizer: a word left from a Textual Inversion run would
    make "the base model" (or a LoRA run) draw that run's subject whenever a prompt names it."""
    for folder, token in list(state.tokens.items()):
        if folder != keep:
            _unload_word(pipe, token)
            del state.tokens[folder]


def _unload_word(pipe, token: str) -> None:
    names = tokens_of_word(pipe.tokenizer, token)  # a multi-vector word is several tokens: all go
    if names:  # (diffusers unloads *every* added word when given none)
        pipe.unload_textual_inversion(names)


def _use_dreambooth(pipe, state: AppliedAdapters, folder: Path) -> None:
    from diffusers import UNet2DConditionModel

    if state.dreambooth_folder == str(folder):
        return
    unet_folder = folder / MODEL_FOLDER / "unet"
    if not unet_folder.is_dir():
        raise JobFailed(f"{folder} has no {MODEL_FOLDER}/unet", "export the run again", code="bad_adapter")
    base = state.base_unet if state.base_unet is not None else pipe.unet
    weights = unet_folder / "diffusion_pytorch_model.safetensors"
    if weights.is_file():  # a damaged file is named with its reason, not diffusers' "Unable to load"
        check_safetensors_header(weights, str(weights))
    tuned = UNet2DConditionModel.from_pretrained(unet_folder, use_safetensors=True)
    pipe.unet = tuned.to(device=base.device, dtype=base.dtype)
    state.base_unet, state.dreambooth_folder = base, str(folder)


def _restore_unet(pipe, state: AppliedAdapters) -> None:
    if state.base_unet is not None:
        pipe.unet, state.base_unet, state.dreambooth_folder = state.base_unet, None, ""


def release(loaded) -> None:
    """Everything off and the LoRA layers unloaded, not just disabled: training injects its own
    LoRA into the same UNet and must find it plain (a disabled adapter left in the layers broke
    the next run's backward pass). The next gallery or edit loads its run's files again."""
    state = getattr(loaded, "adapters", None)
    if state is None:
        return
    pipe = loaded.pipeline
    _remove_all(pipe, state)
    if state.lora_names:
        pipe.unload_lora_weights()
        state.lora_names = {}


def _remove_all(pipe, state: AppliedAdapters) -> None:
    _restore_unet(pipe, state)
    _disable_lora(pipe, state)
    _drop_tokens(pipe, state)
    state.active = ()
    state.method = state.token = state.lora_name = ""


# ------------------------------------------------------------------------ the target branch only
def _state(loaded) -> AppliedAdapters:
    return getattr(loaded, "adapters", None) or AppliedAdapters()


def named_in(loaded, prompt: str) -> bool:
    """Whether ``prompt`` names the active run's word (then the run drew that picture)."""
    from engine.protocol.editing import normalise_word, prompt_words

    token = _state(loaded).token
    return bool(token) and any(normalise_word(word) == token.lower() for word in prompt_words(prompt))


def changes_unet(loaded) -> bool:
    """The active run changes the UNet (LoRA, pivotal, DreamBooth), not only the words."""
    return _state(loaded).method in ("lora", "pivotal", "dreambooth")


@contextmanager
def plain_unet(loaded):
    """The base model's UNet for the duration: the active run's LoRA layers switched off, or the
    base UNet swapped back in for a DreamBooth run (the words stay: a prompt without them is
    encoded as by the base model)."""
    state, pipe = _state(loaded), loaded.pipeline
    if state.method == "dreambooth" and state.base_unet is not None:
        tuned, pipe.unet = pipe.unet, state.base_unet
        try:
            yield
        finally:
            pipe.unet = tuned
    elif state.lora_name:
        pipe.unet.disable_lora()
        try:
            yield
        finally:
            pipe.unet.enable_lora()
    else:
        yield


@contextmanager
def lora_on_rows(loaded, rows_on: list[bool]):
    """Run the active LoRA on some rows of each UNet batch only: the batch is ``rows_on`` repeated
    (classifier-free guidance doubles it), False rows get the base layers exactly. This is peft's
    mixed-adapter batch (``adapter_names``, "__base__" for none); PeftModel passes it down with
    forward hooks, and a pipeline's injected UNet has no PeftModel, so the same hooks are set here."""
    from peft.tuners.lora import LoraLayer

    name = _state(loaded).lora_name
    if not name:
        raise ValueError("no LoRA is active")

    def pass_names(module, args, kwargs):
        batch = (args[0] if args else kwargs["x"]).shape[0]
        if batch % len(rows_on):
            raise ValueError(f"a UNet batch of {batch} does not repeat the {len(rows_on)} edit rows")
        kwargs["adapter_names"] = [name if on else "__base__" for on in rows_on] * (batch // len(rows_on))
        return args, kwargs

    handles = [module.register_forward_pre_hook(pass_names, with_kwargs=True)
               for module in loaded.pipeline.unet.modules() if isinstance(module, LoraLayer)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
