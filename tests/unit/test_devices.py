"""Device policy on CPU, with the CUDA and MPS queries monkeypatched."""

import types

import pytest

from engine import devices


@pytest.fixture
def fake_hw(monkeypatch):
    state = {"cuda": False, "mps": False, "bf16": True}
    monkeypatch.setattr(devices, "_cuda_available", lambda: state["cuda"])
    monkeypatch.setattr(devices, "_mps_available", lambda: state["mps"])
    monkeypatch.setattr(devices, "_cuda_supports_bf16", lambda: state["bf16"])
    monkeypatch.delenv("S2S_DEVICE", raising=False)
    return state


def test_order_is_cuda_then_mps_then_cpu(fake_hw):
    assert devices.select_device() == "cpu"
    fake_hw["mps"] = True
    assert devices.select_device() == "mps"
    fake_hw["cuda"] = True
    assert devices.select_device() == "cuda"


def test_preference_and_environment_override(fake_hw, monkeypatch):
    fake_hw["cuda"] = True
    assert devices.select_device("cpu") == "cpu"
    monkeypatch.setenv("S2S_DEVICE", "cpu")
    assert devices.select_device() == "cpu"
    assert devices.select_device("cuda:0") == "cuda:0"


def test_asking_for_missing_accelerator_is_a_clear_error(fake_hw):
    with pytest.raises(RuntimeError, match="CUDA"):
        devices.select_device("cuda")
    with pytest.raises(RuntimeError, match="MPS"):
        devices.select_device("mps")
    with pytest.raises(ValueError):
        devices.select_device("tpu")


def test_dtype_policy(fake_hw):
    assert devices.dtype_name("cuda", "inference") == "float16"
    assert devices.dtype_name("cuda:1", "training") == "bfloat16"
    fake_hw["bf16"] = False
    assert devices.dtype_name("cuda", "training") == "float16"
    assert devices.dtype_name("mps", "inference") == "float16"
    assert devices.dtype_name("mps", "training") == "float32"
    assert devices.dtype_name("cpu", "inference") == devices.dtype_name("cpu", "training") == "float32"


def test_list_devices_reports_cuda_and_mps(fake_hw, monkeypatch):
    import torch

    fake_hw.update(cuda=True, mps=True)
    props = types.SimpleNamespace(name="NVIDIA Fake 24GB", total_memory=24 * 2**30)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * 2**30, raising=False)
    found = devices.list_devices()
    assert [d.name for d in found] == ["cuda:0", "cuda:1", "mps", "cpu"]
    assert found[0].total_memory_bytes == 24 * 2**30 and found[0].inference_dtype == "float16"
    assert found[2].training_dtype == "float32" and found[2].total_memory_bytes == 16 * 2**30
    assert found[-1].kind == "cpu" and found[-1].inference_dtype == "float32"


def test_mps_fallback_env_is_set(monkeypatch):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    devices.configure_environment()
    import os

    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"
