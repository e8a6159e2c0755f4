"""Which files of a hub repo a Stable Diffusion download needs (no network, no hub library).

Only what the engine loads, in safetensors form: ``model_index.json``, each listed component's
config/tokenizer/scheduler files and its *plain* ``.safetensors`` weights (shards included); never
``.bin``/``.ckpt`` pickles, never fp16/ema/non-ema duplicates, never the safety checker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath as Path

from engine.jobs import JobFailed

CODE_UNSUPPORTED = "model_error"
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")

# Components a StableDiffusionPipeline lists that the engine never loads (it passes
# safety_checker=None); the SD 1.x safety checker alone is 1.2 GB.
SKIP_COMPONENTS = frozenset({"safety_checker"})
# Non-weight files a component folder may need (configs, tokenizer vocab/merges, sentencepiece).
CONFIG_SUFFIXES = (".json", ".txt", ".model")
# Files that are model weights in some format: a component that has any of these needs weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".pkl", ".msgpack", ".h5", ".onnx", ".pb")


@dataclass
class DownloadPlan:
    files: list[str]  # repo paths to fetch, model_index.json first
    sizes: dict[str, int | None]
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size or 0 for size in self.sizes.values())


# ---------------------------------------------------------------------------------------------
# Choosing the files


def weight_variant(filename: str) -> str | None:
    """``"fp16"`` for ``diffusion_pytorch_model.fp16.safetensors`` (or a shard of it), ``None`` for
    the plain ``diffusion_pytorch_model.safetensors`` / ``model-00001-of-00002.safetensors``."""
    name = filename.rsplit("/", 1)[-1]
    stem = name.removesuffix(".safetensors")
    stem = _SHARD.sub("", stem)
    return stem.split(".", 1)[1] if "." in stem else None


def _is_plain_config(name: str) -> bool:
    """Config/tokenizer files, minus indexes that point at pickle, flax or variant weights."""
    if not name.endswith(CONFIG_SUFFIXES):
        return False
    for index in (".bin.index", ".msgpack.index", ".h5.index", ".pt.index"):
        if index in name:
            return False
    if ".safetensors.index." in name:  # model.safetensors.index.json is plain; ...index.fp16.json is not
        return name.endswith(".safetensors.index.json")
    return True


def pipeline_components(model_index: dict) -> list[str]:
    """Component folders a diffusers pipeline loads: entries like ``"unet": ["diffusers", "UNet…"]``."""
    names = []
    for key, value in model_index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            continue  # an optional component the repo does not ship ([null, null])
        names.append(key)
    return names


def plan_files(repo_id: str, sizes: dict[str, int | None], model_index: dict) -> DownloadPlan:
    """The explicit list of files a StableDiffusionPipeline needs, or JobFailed saying what is missing."""
    chosen = ["model_index.json"]
    for component in pipeline_components(model_index):
        if component in SKIP_COMPONENTS:
            continue
        prefix = component + "/"
        children = sorted(p for p in sizes if p.startswith(prefix) and "/" not in p[len(prefix) :])
        if not children:
            raise JobFailed(
                f"{repo_id} is incomplete: model_index.json lists a {component} but the repo has no {component}/ folder",
                "choose another repo or revision of this model",
                code=CODE_UNSUPPORTED,
            )
        chosen += [p for p in children if _is_plain_config(p)]
        weights = [p for p in children if p.endswith(WEIGHT_SUFFIXES)]
        if not weights:
            continue  # tokenizer, scheduler, feature extractor: configuration only
        plain = [p for p in weights if p.endswith(".safetensors") and weight_variant(p) is None]
        if plain:
            chosen += plain
            continue
        variants = sorted({weight_variant(p) for p in weights if p.endswith(".safetensors")} - {None})
        if variants:
            raise JobFailed(
                f"{repo_id}: the {component} weights exist only as {', '.join(variants)} variant(s) "
                f"({weights[0].rsplit('/', 1)[-1]}); this version loads plain .safetensors weights only",
                "choose a repo or revision that has plain diffusers .safetensors weights",
                code=CODE_UNSUPPORTED,
            )
        raise JobFailed(
            f"{repo_id}: the {component} weights are not available as .safetensors "
            f"(only {', '.join(sorted({Path(p).suffix for p in weights}))})",
            "pickle checkpoints (.bin/.ckpt) can run arbitrary code and are never downloaded; "
            "choose a repo or revision with .safetensors weights",
            code=CODE_UNSUPPORTED,
        )
    chosen = list(dict.fromkeys(chosen))
    skipped = sorted(set(sizes) - set(chosen))
    return DownloadPlan(chosen, {p: sizes.get(p) for p in chosen}, skipped)
