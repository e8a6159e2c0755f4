"""Device policy: which accelerator, which dtype for which use. The one place that decides.

Order: CUDA, then Apple MPS, then CPU; ``S2S_DEVICE`` or an explicit preference overrides.
``configure_environment()`` must run before torch is imported (the MPS variables are read at import).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

USES = ("inference", "training")


def configure_environment() -> None:
    """Environment variables that only take effect if set before ``import torch``."""
    # Ops MPS lacks fall back to the CPU instead of raising NotImplementedError mid-job.
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    # Let MPS use unified memory up to the OS limit instead of refusing at ~70% of RAM.
    os.environ.setdefault("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "0.0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class DeviceInfo:
    name: str  # "cuda:0", "mps", "cpu"
    kind: str  # "cuda", "mps", "cpu"
    description: str
    total_memory_bytes: int | None
    inference_dtype: str
    training_dtype: str
    available: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _cuda_supports_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def select_device(preference: str | None = None) -> str:
    """Resolve "auto"/None (or $S2S_DEVICE) to the best available device kind."""
    preference = (preference or os.environ.get("S2S_DEVICE") or "auto").lower()
    if preference not in ("auto", "cuda", "mps", "cpu") and not preference.startswith("cuda:"):
        raise ValueError(f"unknown device {preference!r}; use auto, cuda, mps or cpu")
    if preference.startswith("cuda"):
        if not _cuda_available():
            raise RuntimeError("CUDA was asked for but no CUDA device is available")
        return preference
    if preference == "mps":
        if not _mps_available():
            raise RuntimeError("MPS was asked for but this machine has no usable Apple GPU")
        return "mps"
    if preference == "cpu":
        return "cpu"
    if _cuda_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def dtype_name(device: str, use: str = "inference") -> str:
    """The dtype policy, by name (so the GUI can show it without torch).

    CUDA: fp16 for inference; bf16 for training where the card has it (no loss scaling needed),
    else fp16 mixed precision. MPS: fp16 inference, fp32 training (fp16 training on MPS gives NaNs
    and bf16 autocast is incomplete there). CPU: fp32 for both (fp16 matmuls are slow or missing).
    """
    if use not in USES:
        raise ValueError(f"use must be one of {USES}")
    kind = device.split(":")[0]
    if kind == "cuda":
        if use == "inference":
            return "float16"
        return "bfloat16" if _cuda_supports_bf16() else "float16"
    if kind == "mps":
        return "float16" if use == "inference" else "float32"
    return "float32"


def torch_dtype(device: str, use: str = "inference"):
    import torch

    return getattr(torch, dtype_name(device, use))


def list_devices() -> list[DeviceInfo]:
    """Every device this process can use, best first; CPU is always last."""
    import torch

    found: list[DeviceInfo] = []
    if _cuda_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(
                DeviceInfo(
                    name=f"cuda:{index}",
                    kind="cuda",
                    description=props.name,
                    total_memory_bytes=int(props.total_memory),
                    inference_dtype=dtype_name("cuda", "inference"),
                    training_dtype=dtype_name("cuda", "training"),
                )
            )
    if _mps_available():
        total = None
        try:
            total = int(torch.mps.recommended_max_memory())
        except (AttributeError, RuntimeError):
            pass
        found.append(
            DeviceInfo(
                name="mps",
                kind="mps",
                description="Apple GPU (Metal)",
                total_memory_bytes=total,
                inference_dtype=dtype_name("mps", "inference"),
                training_dtype=dtype_name("mps", "training"),
            )
        )
    found.append(
        DeviceInfo(
            name="cpu",
            kind="cpu",
            description=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)",
            total_memory_bytes=_system_memory_bytes(),
            inference_dtype="float32",
            training_dtype="float32",
        )
    )
    return found


def _system_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def peak_memory_bytes(device: str) -> int | None:
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        return int(torch.cuda.max_memory_allocated())
    if kind == "mps":
        try:
            return int(torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    return None


def empty_cache(device: str) -> None:
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def cache_budget_bytes(device: str, share: float = 0.4, floor: int = 256 << 20) -> int:
    """How much a cache that lives beside the model (an edit's recorded source branch) may take:
    a share of what is free now on the accelerator, or of the machine's memory (CPU, and MPS whose
    memory is the machine's)."""
    import torch

    free = None
    if device.split(":")[0] == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info()
        except RuntimeError:
            free = None
    if free is None:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            free = _system_memory_bytes() or 0
    return max(floor, int(free * share))
