"""Hostile files and names, handed to the app the way a user (or a peer on the protocol) would.

* pickles whose unpickling runs code: refused by default; opted in, loaded weights-only, so the
  payload still never runs and the refusal says why;
* tampered or mislabelled .safetensors: refused with the file and the problem named, as a base
  model (single file or inside a diffusers folder) and as a run's LoRA / embedding / UNet;
* decompression bombs and malformed images: refused one by one, the good photos of the same batch
  imported, the catalog consistent and nothing left on disk for the refused ones;
* names that try to leave the library: refused with a message, or mapped to a folder inside it.

After every refusal the engine still answers and keeps the model it had, and the library is intact.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.protocol import ErrorCode, ProtocolError
from engine.server import EngineState, Server

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ helpers
class Capture(io.StringIO):
    def messages(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


class Engine:
    """The engine's server in-process, spoken to with protocol lines (as the GUI does)."""

    def __init__(self):
        self.out = Capture()
        self.server = Server(self.out, EngineState())
        self._next = 0

    def call(self, method: str, params: dict | None = None, timeout: float = 120) -> dict:
        self._next += 1
        rid = self._next
        self.server.handle_line(json.dumps({"type": "request", "id": rid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a hang fails here instead of blocking the suite
            for message in self.out.messages():
                if message.get("type") == "response" and message.get("id") == rid:
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no answer to {method} within {timeout}s")

    def finish(self, job: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.out.messages():
                if message.get("job") == job and message.get("event") in ("finished", "failed", "cancelled"):
                    return message
            time.sleep(0.02)
        raise AssertionError(f"job {job} did not end within {timeout}s")

    def alive(self) -> bool:
        return self.call("hello")["result"]["v"] == 1

    @property
    def loaded(self):
        return self.server.state.models.current


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = Engine()
    answer = eng.call("load_model", {"source": str(tiny_model_dir), "device": "cpu"})
    assert "result" in answer, answer
    yield eng
    eng.server.stop()


def ensure_folder_model(engine: Engine, folder: Path) -> None:
    answer = engine.call("load_model", {"source": str(folder), "device": "cpu"})
    assert "result" in answer, answer


def assert_clear(error: dict, code: str, *fragments: str) -> None:
    """What (the fragments, e.g. the file's name), why, and a hint saying what to do."""
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error)
    assert error.get("hint"), error
    assert "Traceback" not in error["message"]


class CodePayload:
    """Unpickling this calls open(marker, "w"): the marker file existing means code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pickles(folder: Path, marker: Path) -> dict[str, Path]:
    import torch

    ckpt = folder / "v1-5-pruned.ckpt"  # the old raw pickle layout
    ckpt.write_bytes(pickle.dumps({"state_dict": {"w": CodePayload(marker)}}, protocol=2))
    pt = folder / "model.pt"  # torch.save's zip layout
    torch.save({"state_dict": {"w": CodePayload(marker)}}, pt)
    # the payloads are live: a plain unpickle runs them (proved on a second marker, then removed)
    probe = folder / "probe-marker"
    pickle.loads(pickle.dumps(CodePayload(probe)))
    assert probe.exists()
    probe.unlink()
    return {"ckpt": ckpt, "pt": pt}


# ------------------------------------------------------------------------------------ 1. pickles
def test_pickle_checkpoints_with_a_code_payload_never_run(engine, tiny_model_dir, tiny_single_file, tmp_path,
                                                         faults):
    marker = tmp_path / "PAYLOAD-RAN"
    files = hostile_pickles(tmp_path, marker)
    ensure_folder_model(engine, tiny_model_dir)
    tried = 0
    for path in files.values():
        # default: refused before anything is read, saying why and how to opt in
        error = engine.call("load_model", {"source": str(path), "device": "cpu"})["error"]
        assert_clear(error, ErrorCode.REFUSED, path.name, "pickle", "arbitrary code")
        assert "Allow pickle" in error["hint"] and "weights_only=True" in error["hint"]
        # opted in (with and without a config folder): loaded weights-only, so the payload is refused
        for extra in ({}, {"config": str(tiny_model_dir)}):
            error = engine.call("load_model", {"source": str(path), "allow_pickle": True, "device": "cpu", **extra})
            assert_clear(error["error"], ErrorCode.REFUSED, path.name, "run code", "weights-only")
        tried += 3
    assert not marker.exists(), "a pickle payload ran"
    # the model that was loaded is still loaded, and the engine still answers
    assert engine.alive() and engine.loaded.ref.location == str(tiny_model_dir)

    # the opt-in is real: a .ckpt of plain tensors loads (weights_only accepts it)
    import torch
    from safetensors.torch import load_file

    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": load_file(str(tiny_single_file))}, plain)
    refused = engine.call("load_model", {"source": str(plain), "device": "cpu"})["error"]
    assert refused["code"] == ErrorCode.REFUSED
    loaded = engine.call("load_model", {"source": str(plain), "allow_pickle": True, "config": str(tiny_model_dir),
                                        "device": "cpu"})
    assert loaded.get("result", {}).get("kind") == "single_file", loaded
    faults.record("hostile files", "pickle .ckpt/.pt with a code payload (load_model)", tried=tried, survived=tried,
                  note="refused by default; opted in, weights_only refuses the payload with its reason")


def test_other_pickle_readers_never_run_a_payload(tmp_path, faults):
    """Training checkpoints (resume) and feature-model weights (Settings → Feature models)."""
    import torch
    from safetensors.torch import save_file

    from engine import metrics
    from engine.train import checkpoint

    marker = tmp_path / "PAYLOAD-RAN"
    files = hostile_pickles(tmp_path, marker)
    # a checkpoint folder whose optimizer.pt was swapped for a payload
    step = tmp_path / "run" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    layer = torch.nn.Linear(2, 2)
    save_file(layer.state_dict(), str(step / "trainable.safetensors"))
    shutil.copy(files["pt"], step / "optimizer.pt")
    (step / "state.json").write_text(json.dumps({"step": 10}))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    with pytest.raises(Exception) as refused:  # resuming fails (the run keeps its other checkpoints)
        checkpoint.load(step, layer, optimizer, scheduler)
    assert "global" in str(refused.value) or "optimizer.pt" in str(refused.value), refused.value
    # an "InceptionV3 weights" file chosen in Settings
    for path in files.values():
        with pytest.raises(metrics.Unavailable) as refused:
            metrics._safe_state_dict(path, "InceptionV3 weights")
        assert path.name in str(refused.value) and "plain weights" in str(refused.value)
    assert not marker.exists(), "a pickle payload ran"
    faults.record("hostile files", "code payload in a training checkpoint / feature-model weights", tried=3,
                  survived=3, note="torch.load(weights_only=True) refuses it")


def test_every_torch_load_in_the_app_is_weights_only():
    """A source check (not a fault, so not in the report): no unpickling that could run code."""
    calls, unsafe = 0, []
    for path in [*(ROOT / "engine").rglob("*.py"), *(ROOT / "s2s_desktop").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            keywords = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (owner, node.func.attr) == ("torch", "load"):
                calls += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(where)
            elif owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
                unsafe.append(where)
            elif (owner, node.func.attr) == ("np", "load"):
                flag = keywords.get("allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    unsafe.append(where)
    assert calls >= 3 and unsafe == [], unsafe  # (calls: the walk found the loaders)


# ------------------------------------------------------------------------------------ 2. safetensors
def _safetensors(header, data: bytes = b"", length: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _two(a=(0, 16), b=(16, 32), dtype="F32", shape=(4,)) -> dict:
    return {"a": {"dtype": dtype, "shape": list(shape), "data_offsets": list(a)},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": list(b)}}


def tampered_safetensors(folder: Path, valid: bytes) -> list[tuple[Path, str]]:
    """(file, what the refusal must say) for each way a header can lie."""
    import torch

    zipped = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, zipped)
    data = bytes(32)
    cases = {
        "header-longer-than-file": (_safetensors(_two(), data, length=10**6), "claims"),
        "header-2-to-the-63": (_safetensors(_two(), data, length=2**63), "claims"),
        "header-not-json": (_safetensors(b"\xff\xfe{not json", data), "not valid"),
        "header-a-list": (_safetensors([1, 2, 3]), "not a JSON object"),
        "offsets-outside-the-data": (_safetensors(_two(b=(16, 4096)), data), "outside"),
        "offsets-negative": (_safetensors(_two(a=(-16, 0)), data), "outside"),
        "offsets-reversed": (_safetensors(_two(a=(16, 0)), data), "outside"),
        "offsets-overlapping": (_safetensors(_two(b=(0, 16)), data), "overlaps"),
        "offsets-with-a-gap": (_safetensors(_two(b=(24, 40)), bytes(40)), "gap"),
        "offsets-not-numbers": (_safetensors(_two(a=("0", "16"))), "whole numbers"),
        "offsets-booleans": (_safetensors(_two(a=(False, True)), data), "whole numbers"),
        "shape-larger-than-data": (_safetensors(_two(shape=(1000,)), data), "do not match"),
        "shape-negative": (_safetensors(_two(shape=(-4,)), data), "do not match"),
        "dtype-unknown": (_safetensors(_two(dtype="Q7"), data), "unknown dtype"),
        "dtype-wrong-size": (_safetensors(_two(dtype="F64"), data), "do not match"),
        "metadata-not-strings": (_safetensors({"__metadata__": {"step": 3}, **_two()}, data), "__metadata__"),
        "bytes-after-the-last-tensor": (_safetensors(_two(), bytes(48)), "belong to no tensor"),
        "truncated-download": (valid[: len(valid) // 2], "outside"),
        "truncated-header": (valid[:100], "claims"),
        "zero-bytes": (b"", "shorter"),
        "really-a-pickle": (pickle.dumps({"w": [0.0] * 4}, protocol=4), "really a pickle"),
        "really-a-zip": (zipped.getvalue(), "really a pickle"),
    }
    out = []
    for name, (payload, why) in cases.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(payload)
        out.append((path, why))
    return out


def test_tampered_safetensors_base_model_is_refused_with_the_reason(engine, tiny_model_dir, tiny_single_file,
                                                                    tmp_path, faults):
    cases = tampered_safetensors(tmp_path, tiny_single_file.read_bytes())
    ensure_folder_model(engine, tiny_model_dir)
    for path, why in cases:
        answer = engine.call("load_model", {"source": str(path), "config": str(tiny_model_dir), "device": "cpu"})
        assert_clear(answer["error"], ErrorCode.REFUSED, path.name, "not a valid .safetensors", why)
    if hasattr(os, "mkfifo"):  # reading a pipe would wait for a writer forever
        os.mkfifo(tmp_path / "a-pipe.safetensors")
        cases.append((tmp_path / "a-pipe.safetensors", "pipe"))
        answer = engine.call("load_model", {"source": str(tmp_path / "a-pipe.safetensors"), "device": "cpu"})
        assert_clear(answer["error"], ErrorCode.REFUSED, "a-pipe.safetensors", "pipe")
    assert engine.alive() and engine.loaded.ref.location == str(tiny_model_dir)

    # the same lies inside a diffusers folder: named with the component, not called "pickle-only"
    folder = tmp_path / "damaged-model"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    whole = weights.read_bytes()
    for payload, why in ((whole[: len(whole) // 2], "outside"), (_safetensors([0]), "not a JSON object")):
        weights.write_bytes(payload)
        answer = engine.call("load_model", {"source": str(folder), "device": "cpu"})
        assert_clear(answer["error"], ErrorCode.REFUSED, "damaged-model/unet/diffusion_pytorch_model.safetensors", why)
        assert "pickle" not in answer["error"]["message"]
    assert engine.loaded.ref.location == str(tiny_model_dir)

    # the check refuses nothing valid: a header of 640 bytes starts like a pickle (80 02 …) and is fine
    from engine.models.registry import check_safetensors_header

    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "__metadata__": {"pad": ""}}
    header["__metadata__"]["pad"] = "x" * (640 - len(json.dumps(header)))
    lookalike = tmp_path / "lookalike.safetensors"
    lookalike.write_bytes(_safetensors(header, bytes(16)))
    assert lookalike.read_bytes()[:2] == b"\x80\x02"
    check_safetensors_header(lookalike)
    # and the real single file still loads
    good = engine.call("load_model", {"source": str(tiny_single_file), "config": str(tiny_model_dir), "device": "cpu"})
    assert good.get("result", {}).get("kind") == "single_file", good
    faults.record("hostile files", "tampered .safetensors as a base model (file and folder)", tried=len(cases) + 2,
                  survived=len(cases) + 2, note="refused before loading, file and problem named; model kept")


def test_tampered_safetensors_as_a_run_are_refused_and_the_model_stays_usable(engine, tiny_model_dir, tmp_path,
                                                                             faults):
    from engine import adapters
    from engine.train.export import DIFFUSERS_EMBEDDING, DIFFUSERS_LORA, MODEL_FOLDER

    ensure_folder_model(engine, tiny_model_dir)
    cases = tampered_safetensors(tmp_path, (tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors").read_bytes())
    tried = 0
    for method, relative in (("lora", DIFFUSERS_LORA), ("ti", DIFFUSERS_EMBEDDING),
                             ("dreambooth", f"{MODEL_FOLDER}/unet/diffusion_pytorch_model.safetensors")):
        for path, why in cases[::3]:  # a spread of the header lies per kind of run
            run = tmp_path / f"{method}-{path.stem}"
            (run / relative).parent.mkdir(parents=True)
            (run / "run_config.json").write_text(json.dumps({"method": method, "token": "<zq-star>"}))
            if method == "dreambooth":
                shutil.copy(tiny_model_dir / "unet" / "config.json", run / MODEL_FOLDER / "unet" / "config.json")
            shutil.copy(path, run / relative)
            with pytest.raises(ProtocolError) as refused:
                adapters.apply(engine.loaded, {"folder": str(run), "scale": 1.0})
            assert refused.value.code == ErrorCode.REFUSED and str(run / relative) in refused.value.message
            assert why in refused.value.message and refused.value.hint
            tried += 1
    if hasattr(os, "mkfifo"):  # a pipe named like the LoRA: refused at once, not read (which would block)
        run = tmp_path / "lora-pipe"
        run.mkdir()
        (run / "run_config.json").write_text(json.dumps({"method": "lora"}))
        os.mkfifo(run / DIFFUSERS_LORA)
        outcome: list = []

        def apply_pipe():
            try:
                adapters.apply(engine.loaded, {"folder": str(run), "scale": 1.0})
            except ProtocolError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=apply_pipe, daemon=True)
        worker.start()
        worker.join(30)
        if worker.is_alive():  # unblock the reader before failing
            os.close(os.open(run / DIFFUSERS_LORA, os.O_WRONLY | os.O_NONBLOCK))
        assert not worker.is_alive() and outcome and "not a regular file" in outcome[0].message, outcome
        tried += 1
    adapters.apply(engine.loaded, None)
    assert "<zq-star>" not in engine.loaded.pipeline.tokenizer.get_vocab()
    # the engine still generates with the base model
    job = engine.call("submit", {"kind": "generate", "params": {"prompt": "a red star", "steps": 2, "width": 64,
                                                                "height": 64, "out_dir": str(tmp_path / "out")}})
    done = engine.finish(job["result"]["job"])
    assert done["event"] == "finished", done
    assert [Path(p).parent for p in done["result"]["images"]] == [tmp_path / "out"]
    faults.record("hostile files", "tampered .safetensors as a run's LoRA / embedding / UNet", tried=tried,
                  survived=tried, note="refused with the file named; generating afterwards works")


# ------------------------------------------------------------------------------------ 3. images
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG declaring width×height whose pixels really are there: zlib of zeros, a few KB."""
    squeeze = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    body = b"".join(squeeze.compress(row * min(512, height - y)) for y in range(0, height, 512)) + squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _photo(seed: int, fmt: str = "JPEG", size=(400, 320), **save) -> bytes:
    small = np.random.default_rng(seed).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def hostile_images(folder: Path) -> dict[str, str]:
    """Writes the files; returns file name → the refusal code it must get."""
    limit = Image.MAX_IMAGE_PIXELS
    side_over_pillow_twice = int((2 * limit) ** 0.5) + 1000  # Pillow itself raises on open
    side_over_pillow = int((1.05 * limit) ** 0.5)  # Pillow only warns: the app's own limit must act
    png = _photo(1, "PNG")
    jpeg = _photo(2)
    gif = io.BytesIO()
    Image.new("P", (300, 300)).save(gif, format="GIF")
    gif_huge = bytearray(gif.getvalue())
    gif_huge[6:10] = struct.pack("<HH", 65535, 65535)  # the logical screen: 4 gigapixels
    jpeg_huge = bytearray(jpeg)
    sof = jpeg_huge.find(b"\xff\xc0")
    jpeg_huge[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (32 << 20), 9))  # 32 MB of text, 32 KB
    iccp = _chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(32 << 20), 9))
    files = {
        f"bomb-{side_over_pillow_twice}px.png": (png_bomb(side_over_pillow_twice, side_over_pillow_twice),
                                                 "too_many_pixels"),
        f"bomb-{side_over_pillow}px.png": (png_bomb(side_over_pillow, side_over_pillow), "too_many_pixels"),
        "over-the-app-limit-9000px.png": (png_bomb(9000, 9000), "too_many_pixels"),
        "screen-65535px.gif": (bytes(gif_huge), "too_many_pixels"),
        "frame-65500px.jpg": (bytes(jpeg_huge), "too_many_pixels"),
        "text-bomb.png": (png[:33] + ztxt + png[33:], "corrupt"),
        "icc-bomb.png": (png[:33] + iccp + png[33:], "corrupt"),
        "truncated.png": (png[: len(png) // 2], "corrupt"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "corrupt"),
        "letter.jpg": (b"Dear Sir or Madam,\n" * 20, "not_image"),
        "page.png": (b"<html><script>alert(1)</script></html>", "not_image"),
        "zero.jpg": (b"", "empty"),
    }
    for name, (payload, _) in files.items():
        (folder / name).write_bytes(payload)
    return {name: code for name, (_, code) in files.items()}


def test_bombs_and_malformed_images_are_refused_and_good_photos_kept(isolated_home, tmp_path, faults):
    from s2s_desktop.library import Library, import_files

    batch = tmp_path / "batch"
    batch.mkdir()
    expected = hostile_images(batch)
    # good photos beside them, some carrying what is legal but large or unusual
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # a 60 KB description
    goods = {
        "good-0.jpg": _photo(10),
        "good-exif.jpg": _photo(11, exif=exif.tobytes()),
        "good-icc.jpg": _photo(12, icc_profile=bytes(2 << 20)),  # a 2 MB ICC blob
        "good-1.png": _photo(13, "PNG"),
    }
    frames = [Image.new("P", (320, 320), i % 256) for i in range(400)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])  # 400 frames: the first is used
    goods["good-animated.gif"] = buffer.getvalue()
    pages = [Image.fromarray(np.full((300, 300, 3), i, np.uint8)) for i in range(100)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    goods["good-pages.tiff"] = buffer.getvalue()
    for name, payload in goods.items():
        (batch / name).write_bytes(payload)

    library = Library(isolated_home)
    subject = library.create_subject("Biscuit", "dog")
    kept = import_files(library, library.create_subject("Keeper", "mug"), [batch / "good-0.jpg"])
    assert len(kept.imported) == 1
    report = import_files(library, subject, [batch])
    results = {Path(r.path).name: r for r in report.results}
    assert set(results) == set(expected) | set(goods)
    for name, code in expected.items():
        result = results[name]
        assert (result.status, result.code) == ("refused", code), (name, result)
        assert len(result.reason) > 20 and "Traceback" not in result.reason, (name, result)
    assert sorted(r.source_name for r in library.images(subject.id)) == sorted(goods)
    assert all(results[name].imported for name in goods)
    # the catalog is sound, every row has its file, and nothing is on disk for the refused files
    assert library.integrity_problems() == []
    stored = sorted(p.name for p in (library.subject_folder(subject) / "images").iterdir())
    assert stored == sorted(r.path.name for r in library.images(subject.id))
    assert library.clean_orphans() == []
    assert [r.source_name for r in library.images(library.subject("Keeper").id)] == ["good-0.jpg"]  # untouched
    library.close()
    faults.record("bad images", "decompression bombs and malformed files in an import batch", tried=len(expected),
                  survived=len(expected), note=f"each refused with its reason; {len(goods)} good photos imported")


def test_bombs_given_to_an_edit_are_refused_before_decoding(engine, tiny_model_dir, tmp_path, faults):
    from s2s_desktop.image_meta import read_parameters

    expected = hostile_images(tmp_path)
    ensure_folder_model(engine, tiny_model_dir)
    out = tmp_path / "edits"
    for name in expected:
        # the edit page reads the picture's parameters first: a bomb must not raise there
        assert read_parameters(tmp_path / name) == ""
        job = engine.call("submit", {"kind": "edit", "params": {
            "source_prompt": "a red star", "target_prompt": "a blue star", "image": str(tmp_path / name),
            "steps": 2, "out_dir": str(out), "name": "edit-1"}})
        failed = engine.finish(job["result"]["job"])
        assert failed["event"] == "failed", (name, failed)
        assert_clear(failed["error"], "bad_image", name)
    assert not out.exists() or list(out.iterdir()) == []
    assert engine.alive()
    faults.record("bad images", "decompression bombs and malformed files as an edit's picture", tried=len(expected),
                  survived=len(expected), note="the edit job fails with bad_image before decoding; engine serves on")


# ------------------------------------------------------------------------------------ 4. names
HOSTILE_NAMES = [
    "../../etc", "/abs/path", "..", ".", "a/../../b", "..\\..\\windows", "C:\\Windows\\system32", "a\0b", "CON",
    "NUL", "AUX", "com1", "lpt9.txt", "x" * 1000, "...", " . . ", "   ", "\u202eevil\u202cgpj.exe",
    "a\uff0f..\uff0f..\uff0fb", "\uff0e\uff0e", "~root", "line\nbreak", "zero\u200bwidth", "$(rm -rf ~)",
]


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_subject_names_stay_inside_the_library(isolated_home, faults):
    from s2s_desktop.library import Library
    from s2s_desktop.library.catalog import LibraryError

    outside = isolated_home.parent  # this session's temp root: "../../etc" from subjects/ lands here
    before = {p.name for p in outside.iterdir()}
    library = Library(isolated_home)
    keeper = library.create_subject("Keeper", "mug")
    # renaming: refused with a message, or only the name changes (the folder comes from the id)
    for name in HOSTILE_NAMES:
        try:
            renamed = library.rename_subject(keeper.id, name)
        except LibraryError as exc:
            assert len(str(exc)) > 15, name
        else:
            assert renamed.folder == keeper.folder and renamed.name == name.strip()
            assert library.subject(name).id == keeper.id  # found again by the name as typed
    library.rename_subject(keeper.id, "Keeper")
    refused, mapped = 0, 0
    for name in HOSTILE_NAMES:
        try:
            subject = library.create_subject(name, "dog")
        except LibraryError as exc:
            assert len(str(exc)) > 15, name
            refused += 1
        else:
            folder = library.subject_folder(subject)
            assert _inside(folder, library.subjects_dir) and folder.parent == library.subjects_dir.resolve(), name
            assert folder.is_dir() and subject.name == name.strip()
            mapped += 1
    assert refused and mapped and refused + mapped == len(HOSTILE_NAMES)
    assert library.integrity_problems() == []
    after = {p.name for p in outside.iterdir()}
    assert after == before, after - before  # nothing was written beside the library
    assert all(p.parent == library.subjects_dir for p in library.subjects_dir.iterdir())
    library.close()
    faults.record("hostile names", "path-like, reserved, invisible and overlong subject names",
                  tried=len(HOSTILE_NAMES), survived=len(HOSTILE_NAMES),
                  note=f"{refused} refused with a message, {mapped} kept as data in an id-named folder")


def test_hostile_file_names_are_refused_where_they_become_paths(engine, tiny_model_dir, isolated_home, tmp_path,
                                                                faults):
    from engine.protocol import validate_job
    from engine.protocol.names import is_windows_device
    from engine.train.export import token_slug
    from s2s_desktop.library.catalog import LibraryError
    from s2s_desktop.library.galleries import save_prompt_list
    from s2s_desktop.library.tokens import TokenError, validate_token

    home = isolated_home
    tried = 0
    for name in HOSTILE_NAMES:
        tried += 1
        # a saved prompt list: <home>/prompt-lists/<name>.txt, or refused
        try:
            path = save_prompt_list(home, name, ["a photo of a dog"])
        except LibraryError as exc:
            assert len(str(exc)) > 15
        else:
            assert path.parent == home / "prompt-lists" and _inside(path, home / "prompt-lists")
            assert not is_windows_device(path.name)
        # the engine's file stems: an edit's name and a generation's prefix are joined to out_dir
        for kind, params in (("edit", {"source_prompt": "p", "name": name}), ("generate", {"prompt": "p",
                                                                                           "name_prefix": name})):
            try:
                checked = validate_job(kind, dict(params, out_dir=str(tmp_path / "out")))
            except ProtocolError as exc:
                assert exc.code == ErrorCode.INVALID_PARAMS and ("name" in exc.message), exc.message
            else:
                stem = checked.get("name") or checked["name_prefix"]
                target = tmp_path / "out" / f"{stem}-edited.png"
                assert target.parent == tmp_path / "out" and _inside(target, tmp_path / "out"), name
        # a token becomes the export's file name (A1111 calls embeddings by it)
        try:
            token = validate_token(name, class_noun="dog", taken=set())
        except TokenError:
            token = name
        slug = token_slug(token)
        assert "/" not in slug and "\\" not in slug and slug.strip(".") and not is_windows_device(slug), slug
    for token in ("nul", "<con>", "aux"):
        assert not is_windows_device(token_slug(token))

    # through the engine: refused at submit, nothing written anywhere
    ensure_folder_model(engine, tiny_model_dir)
    out = tmp_path / "gallery" / "out"
    out.mkdir(parents=True)
    before = _tree(tmp_path)
    for prefix in ("../../escaped-", "..\\escaped-", "\uff0e\uff0e\uff0fescaped-"):
        answer = engine.call("submit", {"kind": "generate", "params": {"prompt": "a red star", "steps": 2, "width": 64,
                                                                       "height": 64, "out_dir": str(out),
                                                                       "name_prefix": prefix}})
        error = answer["error"]
        assert error["code"] == ErrorCode.INVALID_PARAMS and "name_prefix" in error["message"], error
        assert "names a file" in error["message"]
    answer = engine.call("submit", {"kind": "edit", "params": {"source_prompt": "a red star", "steps": 2,
                                                               "out_dir": str(out), "name": "../../escaped"}})
    assert answer["error"]["code"] == ErrorCode.INVALID_PARAMS and "edit.name" in answer["error"]["message"]
    assert _tree(tmp_path) == before
    # and a plain prefix still works
    job = engine.call("submit", {"kind": "generate", "params": {"prompt": "a red star", "steps": 2, "width": 64,
                                                                "height": 64, "out_dir": str(out),
                                                                "name_prefix": "star-"}})
    done = engine.finish(job["result"]["job"])
    assert done["event"] == "finished" and Path(done["result"]["images"][0]).parent == out
    assert Path(done["result"]["images"][0]).name.startswith("star-")
    faults.record("hostile names", "hostile prompt-list, edit, file-prefix and token names", tried=tried + 4,
                  survived=tried + 4, note="refused with a message or kept inside their folder; no Windows devices")
