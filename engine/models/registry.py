"""Base models: what a user's "source" string means, and loading it (with a one-model cache).

A source is one of
  * a diffusers folder (``model_index.json`` inside),
  * a single checkpoint file (``.safetensors``; pickle formats only with ``allow_pickle``),
  * a Hugging Face hub id (``owner/name``) already downloaded by a ``download_model`` job.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.protocol import ErrorCode, ProtocolError
from engine.protocol.names import is_hub_id

log = logging.getLogger("s2s.models")

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
SAFE_SUFFIXES = {".safetensors"}
SUPPORTED_PIPELINES = {"StableDiffusionPipeline"}


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "folder" | "single_file" | "hub"
    location: str  # absolute path, or the hub id
    name: str
    allow_pickle: bool = False
    config: str | None = None  # diffusers folder describing a single file

    @property
    def key(self) -> tuple:
        return (self.kind, self.location, self.allow_pickle, self.config)


def resolve_source(params: dict) -> ModelRef:
    """Classify and check a source without importing torch; raise ProtocolError with what to do."""
    source = params["source"].strip()
    allow_pickle = bool(params.get("allow_pickle"))
    config = params.get("config")
    path = Path(os.path.expanduser(source))
    if path.exists():
        path = path.resolve()
        name = params.get("name") or path.stem
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ProtocolError(
                    ErrorCode.MODEL_ERROR,
                    f"{path} is a folder but not a diffusers model (no model_index.json)",
                    "choose the folder that contains model_index.json, or a single .safetensors file",
                )
            return ModelRef("folder", str(path), name, allow_pickle)
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise ProtocolError(
                ErrorCode.REFUSED,
                f"{path.name} is a pickle checkpoint ({suffix}); loading one can run arbitrary code",
                "use a .safetensors version of this model, or enable 'Allow pickle checkpoints' "
                "if you trust where the file came from (it is then loaded with weights_only=True)",
            )
        if suffix not in SAFE_SUFFIXES | PICKLE_SUFFIXES:
            raise ProtocolError(
                ErrorCode.MODEL_ERROR,
                f"{path.name} is not a model file (expected .safetensors)",
                "choose a .safetensors checkpoint or a diffusers folder",
            )
        if suffix in SAFE_SUFFIXES:
            check_safetensors_header(path)
        if config is not None:
            config_path = Path(config).expanduser()
            if not (config_path / "model_index.json").is_file():
                raise ProtocolError(
                    ErrorCode.MODEL_ERROR,
                    f"config {config} is not a diffusers folder (no model_index.json)",
                    "point config at a diffusers folder of the same architecture",
                )
            config = str(config_path.resolve())
        return ModelRef("single_file", str(path), name, allow_pickle, config)
    if is_hub_id(source):
        return ModelRef("hub", source, params.get("name") or source, allow_pickle)
    raise ProtocolError(
        ErrorCode.NOT_FOUND,
        f"{source[:200]!r} is neither an existing file or folder nor a hub id like 'owner/name'",
        "check the path, or download the model from the hub first",
    )


# Bits per element of every dtype safetensors writes (F4/F6 pack several elements in a byte).
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit


def check_safetensors_header(path: Path, shown: str | None = None) -> None:
    """Refuse a truncated or tampered .safetensors before handing it to a loader.

    Layout: 8-byte little-endian header length, a JSON object, then the tensor bytes. Checked as
    the safetensors library checks it (known dtype, shape × dtype = the bytes it spans, tensors
    back to back with no gap or overlap, up to the end of the file), so a bad file is refused here
    with its reason instead of failing deep in a loader as "Unable to load weights". ``shown``:
    how the message names the file (default: its name).
    """
    try:
        problem = _safetensors_problem(path)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        problem = f"its header is not valid ({type(exc).__name__})"
    except OSError as exc:
        problem = f"it cannot be read ({exc.strerror or exc})"
    if problem:
        raise ProtocolError(
            ErrorCode.REFUSED,
            f"{shown or path.name} is not a valid .safetensors file: {problem}",
            "download the file again; if it came from an untrusted place, delete it",
        )


def _safetensors_problem(path: Path) -> str | None:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # opening a pipe blocks until a writer comes; a device never ends
        return "it is not a regular file (a pipe, a device or a folder)"
    size = info.st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return "the file is shorter than a safetensors header"
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, MAX_SAFETENSORS_HEADER):
            if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") or raw[:4] == b"PK\x03\x04":
                # a renamed PyTorch pickle (raw, or torch.save's zip): exactly what .safetensors avoids
                return "it is really a pickle (PyTorch .ckpt/.pt) file, which can run code when loaded"
            return f"its header claims {header_len} bytes, more than the file holds"
        header = json.loads(fh.read(header_len))
    if not isinstance(header, dict):
        return "its header is not valid (not a JSON object)"
    data_len = size - 8 - header_len
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "its __metadata__ is not a map of strings"
            continue
        start, end = info["data_offsets"]
        shape, bits = info["shape"], SAFETENSORS_DTYPE_BITS.get(info["dtype"])
        if not all(type(x) is int for x in (start, end, *shape)):  # bools and floats are not offsets
            return f"tensor {name!r} has offsets or a shape that are not whole numbers"
        if not (0 <= start <= end <= data_len):
            return f"tensor {name!r} points outside the file (truncated download?)"
        if bits is None:
            return f"tensor {name!r} has an unknown dtype {str(info['dtype'])[:20]!r}"
        count = 1
        for dim in shape:
            count *= dim
        if min(shape, default=0) < 0 or count * bits != (end - start) * 8:
            return f"tensor {name!r}: its shape and dtype do not match the {end - start} bytes it spans"
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            return f"tensor {name!r} overlaps another or leaves a gap (tampered offsets)"
        position = end
    if position != data_len:
        return f"{data_len - position} bytes after the last tensor belong to no tensor"
    return None


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except IncompleteSnapshotError as exc:
        # Our downloads skip pickles and fp16 variants on purpose; a cached tree listing from an
        # earlier full download would call that "incomplete". The pipeline files are there.
        if exc.snapshot_path and (Path(exc.snapshot_path) / "model_index.json").is_file():
            return Path(exc.snapshot_path)
        raise ProtocolError(
            ErrorCode.NOT_FOUND, f"{repo_id} is only partly downloaded", "download it again from the Models dialog"
        ) from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise ProtocolError(
            ErrorCode.NOT_FOUND,
            f"{repo_id} has not been downloaded yet",
            "download it first (Models → Add from hub, or `s2s models add` while online)",
        ) from None


class ModelCache:
    """Keeps one loaded pipeline (a base model is GBs; two rarely fit) and reuses it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current = None  # LoadedModel

    def load(self, ref: ModelRef, device: str = "auto") -> dict:
        from engine import devices

        resolved_device = devices.select_device(device)
        dtype = devices.dtype_name(resolved_device, "inference")
        with self._lock:
            if self.current is not None and self.current.key == (ref.key, resolved_device, dtype):
                return self.current.info(cached=True)
            previous, self.current = self.current, None
            if previous is not None and previous.device != "cpu":
                previous.pipeline.to("cpu")  # free the accelerator for the new model; RAM keeps the old
                devices.empty_cache(previous.device)
            started = time.perf_counter()
            try:
                pipeline = _load_pipeline(ref, resolved_device, dtype)
            except BaseException:
                # A model that fails to load must not cost the user the one that worked.
                if previous is not None:
                    previous.pipeline.to(previous.device)
                    self.current = previous
                raise
            del previous
            self.current = LoadedModel(ref, pipeline, resolved_device, dtype, time.perf_counter() - started)
            log.info("loaded %s on %s (%s) in %.1fs", ref.location, resolved_device, dtype, self.current.load_s)
            return self.current.info(cached=False)

    def require(self) -> LoadedModel:
        if self.current is None:
            raise ProtocolError(ErrorCode.NO_MODEL, "no base model is loaded", "load a model first")
        return self.current


@dataclass
class LoadedModel:
    ref: ModelRef
    pipeline: object
    device: str
    dtype: str
    load_s: float

    def __post_init__(self):
        # Schedulers are swapped per job from the model's own scheduler config.
        self.base_scheduler_config = dict(self.pipeline.scheduler.config)
        # the model's own scheduler class (generate swaps pipeline.scheduler; exports save the original)
        self.base_scheduler_class = type(self.pipeline.scheduler)

    @property
    def key(self) -> tuple:
        return (self.ref.key, self.device, self.dtype)

    @property
    def native_resolution(self) -> int:
        pipe = self.pipeline
        return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    def info(self, cached: bool) -> dict:
        return {
            "name": self.ref.name,
            "kind": self.ref.kind,
            "location": self.ref.location,
            "device": self.device,
            "dtype": self.dtype,
            "native_resolution": self.native_resolution,
            "pipeline": type(self.pipeline).__name__,
            "load_s": round(self.load_s, 3),
            "cached": cached,
        }


def _load_pipeline(ref: ModelRef, device: str, dtype_name: str):
    import torch
    from diffusers import StableDiffusionPipeline

    dtype = getattr(torch, dtype_name)
    common = dict(torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
    if ref.kind in ("folder", "hub"):
        folder = Path(ref.location) if ref.kind == "folder" else _hub_snapshot(ref.location)
        _check_pipeline_class(folder)
        _check_folder_weights(folder)
        try:
            # use_safetensors=True never falls back to pickle .bin weights unless opted in.
            pipe = StableDiffusionPipeline.from_pretrained(
                folder, use_safetensors=not ref.allow_pickle, local_files_only=True, **common
            )
        except OSError as exc:
            if "safetensors" in str(exc).lower() and not ref.allow_pickle:
                raise ProtocolError(
                    ErrorCode.REFUSED,
                    f"{folder.name} has only pickle (.bin) weights; loading them can run arbitrary code",
                    "convert the model to .safetensors, or enable 'Allow pickle checkpoints' if you trust it",
                ) from None
            raise
    else:
        kwargs = dict(common)
        if ref.config:
            kwargs["config"] = ref.config
        kwargs["local_files_only"] = os.environ.get("HF_HUB_OFFLINE") == "1" or bool(ref.config)
        try:
            pipe = StableDiffusionPipeline.from_single_file(ref.location, **kwargs)
        except (OSError, ValueError) as exc:
            _raise_unreadable_weights(exc, Path(ref.location))
            if not ref.config:
                raise ProtocolError(
                    ErrorCode.MODEL_ERROR,
                    f"could not find the configuration for {Path(ref.location).name}: {exc}",
                    "a single checkpoint file needs its architecture's config: connect to the internet "
                    "once, or give a diffusers folder of the same model family as 'config'",
                ) from None
            raise
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# The weights StableDiffusionPipeline loads from a diffusers folder (safety checker not included).
PIPELINE_WEIGHTS = {
    "unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model",
}


def _check_folder_weights(folder: Path) -> None:
    """A damaged .safetensors inside a diffusers folder is named with its problem (diffusers only
    says "Unable to load weights", and the fallback below would call it a pickle-only folder)."""
    for component, stem in PIPELINE_WEIGHTS.items():
        index = folder / component / f"{stem}.safetensors.index.json"
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            shards = {f"{stem}.safetensors"}
        for shard in sorted(shards):
            path = folder / component / str(shard)
            if path.is_file() and path.parent == folder / component:
                check_safetensors_header(path, f"{folder.name}/{component}/{path.name}")


def _raise_unreadable_weights(exc: BaseException, path: Path) -> None:
    """diffusers wraps every failure to read a checkpoint as "Unable to load weights from checkpoint
    file"; say what really happened (the weights-only unpickler's refusal is in its context)."""
    seen, depth = exc, 0
    while seen is not None and depth < 10:
        text = str(seen)
        if isinstance(seen, pickle.UnpicklingError) and ("allowed global" in text or "Unsupported global" in text):
            raise ProtocolError(
                ErrorCode.REFUSED,
                f"{path.name} holds Python objects besides tensors, which would run code when loaded; it was "
                "refused even with pickle checkpoints allowed (they load weights-only)",
                "use a .safetensors version of this model; do not open this file with other tools either "
                "unless you trust where it came from",
            ) from None
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if "Unable to load weights from checkpoint file" in str(exc):
        raise ProtocolError(
            ErrorCode.MODEL_ERROR,
            f"{path.name} cannot be read as model weights (damaged, or not a checkpoint)",
            "download the file again, or choose a .safetensors checkpoint",
        ) from None


def _check_pipeline_class(folder: Path) -> None:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProtocolError(ErrorCode.MODEL_ERROR, f"cannot read {folder}/model_index.json: {exc}") from None
    cls = index.get("_class_name")
    if cls not in SUPPORTED_PIPELINES:
        raise ProtocolError(
            ErrorCode.MODEL_ERROR,
            f"{folder.name} is a {cls}; this version supports Stable Diffusion 1.x/2.x models",
            "choose a Stable Diffusion 1.5-family model",
        )
