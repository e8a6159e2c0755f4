"""The download_model job (engine/models/hub.py) against a fake hub on 127.0.0.1: nothing leaves the machine.

The fake hub implements the three endpoints huggingface_hub 2.4 uses for a download:
  GET  /api/models/{repo}[/revision/{rev}]?blobs=True   model_info with file sizes
  HEAD /{repo}/resolve/{rev}/{file}                      X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}                      the bytes (Range supported), optionally slowly
and the hub's error headers (X-Error-Code: RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from engine.jobs import Job, JobCancelled, JobContext, JobFailed
from engine.models import hub as hub_job
from engine.models.tiny import save_tiny_pipeline

BIG_FILE = "unet/diffusion_pytorch_model.safetensors"
BIG_SIZE = 50 * 1000 * 1000
SKIPPED_EXTRAS = {
    "foo.bin": b"\x80\x04 a fake pickle " * 64,
    "v1-5-pruned.ckpt": b"\x80\x04 a fake checkpoint " * 64,
    "unet/diffusion_pytorch_model.bin": b"\x80\x04 a fake unet pickle " * 64,
    "README.md": b"# tiny\n",
}


# ---------------------------------------------------------------------------------------------
# The fake hub


class FakeRepo:
    def __init__(self, files: dict[str, bytes], *, gated: bool = False, slow: dict | None = None):
        self.files = files
        self.sha = hashlib.sha1(json.dumps(sorted(files)).encode() + bytes([gated])).hexdigest()
        self.gated = gated
        self.slow = slow or {}  # path -> (chunk bytes, seconds between chunks)
        self._etags: dict[str, str] = {}

    def etag(self, path: str) -> str:
        if path not in self._etags:
            data = self.files[path]
            lfs = path.endswith((".safetensors", ".bin", ".ckpt"))
            self._etags[path] = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(data).hexdigest()
        return self._etags[path]

    def info(self, repo_id: str) -> dict:
        siblings = []
        for path, data in sorted(self.files.items()):
            entry = {"rfilename": path, "size": len(data), "blobId": hashlib.sha1(data[:1024]).hexdigest()}
            if path.endswith((".safetensors", ".bin", ".ckpt")):
                entry["lfs"] = {"size": len(data), "sha256": self.etag(path), "pointerSize": 134}
            siblings.append(entry)
        return {
            "id": repo_id,
            "sha": self.sha,
            "private": False,
            "gated": "manual" if self.gated else False,
            "siblings": siblings,
        }


class FakeHub:
    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.bytes_sent: dict[str, int] = {}
        self.on_chunk = None  # callback(path, bytes_sent_so_far) while serving a slow file
        self.stopping = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -------------------------------------------------------------- handling
    def _send(self, h, status: int, headers: dict, body: bytes = b"", head: bool = False):
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, str(value))
        h.send_header(
            "Content-Length", str(len(body)) if "Content-Length" not in headers else headers["Content-Length"]
        )
        h.end_headers()
        if body and not head:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str, message: str, head: bool, extra: dict | None = None):
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        self._send(h, status, {**headers, **(extra or {})}, body, head)

    def _handle(self, h, head: bool):
        raw_path = urlsplit(h.path).path
        self.requests.append(("HEAD" if head else "GET", unquote(raw_path)))
        api = re.match(r"^/api/models/([^/]+)/([^/]+)(?:/revision/([^/]+))?$", raw_path)
        resolve = re.match(r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", raw_path)
        match = api or resolve
        if match is None:
            return self._error(h, 404, "NotFound", "unknown endpoint", head)
        repo_id = f"{unquote(match[1])}/{unquote(match[2])}"
        revision = unquote(match[3] or "main")
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "RepoNotFound", "Repository not found", head)
        if revision not in ("main", repo.sha):
            return self._error(h, 404, "RevisionNotFound", "Invalid rev id", head)
        if api:
            body = json.dumps(repo.info(repo_id)).encode()
            return self._send(h, 200, {"Content-Type": "application/json"}, body, head)
        filename = unquote(match[4])
        if repo.gated:
            return self._error(
                h, 401, "GatedRepo", "Access to this model is restricted", head, {"X-Repo-Commit": repo.sha}
            )
        if filename not in repo.files:
            return self._error(h, 404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": repo.sha})
        self._serve_file(h, repo, filename, head)

    def _serve_file(self, h, repo: FakeRepo, filename: str, head: bool):
        data = repo.files[filename]
        etag = repo.etag(filename)
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if filename.endswith((".safetensors", ".bin", ".ckpt")):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": len(data)})
        start, status = 0, 200
        range_header = h.headers.get("Range")
        if range_header and not head:
            m = re.match(r"bytes=(\d+)-$", range_header.strip())
            if m and int(m[1]) < len(data):
                start, status = int(m[1]), 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = len(data) - start
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, str(value))
        h.end_headers()
        if head:
            return
        chunk, delay = repo.slow.get(filename, (len(data) or 1, 0.0))
        sent = start
        try:
            view = memoryview(data)
            while sent < len(data) and not self.stopping.is_set():
                piece = view[sent : sent + chunk]
                h.wfile.write(piece)
                sent += len(piece)
                self.bytes_sent[filename] = sent
                if delay:
                    h.wfile.flush()
                    if self.on_chunk is not None:
                        self.on_chunk(filename, sent)
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            h.close_connection = True
        if sent < len(data):
            h.close_connection = True


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("hub_src") / "tiny")
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _online(monkeypatch, tmp_path: Path, endpoint: str) -> None:
    """Point huggingface_hub at ``endpoint`` with a private cache, for this test only."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf_home"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # hf_hub reads these at import: patched too, so nothing can fall back to huggingface.co.
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    # Never send a developer's real token, even to localhost.
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"), raising=False)
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"), raising=False)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    hub = FakeHub()
    _online(monkeypatch, tmp_path, hub.url)
    yield hub
    hub.close()


def _run(repo_id: str, revision: str | None = None):
    job = Job("download_model", {"repo_id": repo_id, "revision": revision})
    events: list[dict] = []
    ctx = JobContext(job, events.append)
    return job, ctx, events


def _cache_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# ---------------------------------------------------------------------------------------------
# Tests


def test_download_fetches_only_plain_safetensors_and_loads(fake_hub, tiny_files):
    import torch
    from diffusers import StableDiffusionPipeline

    from engine.models.registry import _hub_snapshot

    fp16 = "unet/diffusion_pytorch_model.fp16.safetensors"
    files = {**tiny_files, **SKIPPED_EXTRAS, fp16: tiny_files[BIG_FILE]}
    fake_hub.repos["test/tiny-sd"] = FakeRepo(files)
    job, ctx, events = _run("test/tiny-sd")

    result = hub_job.run_download_job(job.params, ctx, None)

    snapshot = Path(result["path"])
    assert snapshot == _hub_snapshot("test/tiny-sd"), "registry must find the download in the normal HF cache"
    got = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert got == set(tiny_files)
    assert result["files"] == len(tiny_files)
    assert result["bytes"] == sum(len(b) for b in tiny_files.values())
    assert result["repo_id"] == "test/tiny-sd"
    fetched = {
        path.split("/resolve/main/")[-1].split(f"/resolve/{fake_hub.repos['test/tiny-sd'].sha}/")[-1]
        for _, path in fake_hub.requests
        if "/resolve/" in path
    }
    assert not fetched & (set(SKIPPED_EXTRAS) | {fp16}), f"fetched files it must skip: {fetched}"

    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["unit"] == "bytes" for e in progress)
    assert all(e["total"] == result["bytes"] for e in progress)
    steps = [e["step"] for e in progress]
    assert steps == sorted(steps) and steps[-1] == result["bytes"]

    pipe = StableDiffusionPipeline.from_pretrained(snapshot, local_files_only=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert torch.isfinite(next(pipe.unet.parameters())).all()

    # A second run finds everything cached: no file body is transferred again.
    fake_hub.requests.clear()
    job2, ctx2, events2 = _run("test/tiny-sd")
    again = hub_job.run_download_job(job2.params, ctx2, None)
    assert again["path"] == result["path"]
    assert not [
        p for m, p in fake_hub.requests if m == "GET" and "/resolve/" in p and p.endswith(".safetensors")
    ]
    assert [e for e in events2 if e["event"] == "progress"][-1]["step"] == again["bytes"]


def test_cancel_stops_a_big_file_mid_transfer(fake_hub, tiny_files):
    files = {**tiny_files, BIG_FILE: bytes(BIG_SIZE)}
    # ~3 MB/s: the whole file would take ~16 s, and one of hf_hub's default 10 MiB chunks ~3 s
    # (so this test fails if the download only notices a cancel once per default chunk).
    fake_hub.repos["test/slow"] = FakeRepo(files, slow={BIG_FILE: (64 * 1024, 0.02)})
    job, ctx, events = _run("test/slow")
    cancelled_at: list[float] = []

    def cancel_mid_way(filename: str, sent: int) -> None:
        if filename == BIG_FILE and sent >= 3_000_000 and not cancelled_at:
            cancelled_at.append(time.monotonic())
            job.cancel_requested.set()

    fake_hub.on_chunk = cancel_mid_way
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        hub_job.run_download_job(job.params, ctx, None)
    stopped = time.monotonic()

    assert cancelled_at, "the big file was never reached"
    assert stopped - cancelled_at[0] < 2.0, f"cancel took {stopped - cancelled_at[0]:.2f}s"
    assert stopped - started < 8
    time.sleep(0.2)  # let the server notice the closed connection
    assert fake_hub.bytes_sent[BIG_FILE] < BIG_SIZE, "the transfer went on after the cancel"
    cache = _cache_root()
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name.endswith(".incomplete")]
    assert not [p for p in cache.rglob("diffusion_pytorch_model.safetensors") if "unet" in p.parts]
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size >= BIG_SIZE]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["unit"] == "bytes" for e in progress)
    assert any(e.get("file") == BIG_FILE and e["step"] < e["total"] for e in progress)


def test_offline_mode_fails_with_a_helpful_message(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    job, ctx, _ = _run("someone/some-model")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "could not reach the hub" in info.value.message
    assert "HF_HUB_OFFLINE" in info.value.message + info.value.hint


def test_unreachable_hub_fails_with_a_helpful_message(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _online(monkeypatch, tmp_path, f"http://127.0.0.1:{port}")
    job, ctx, _ = _run("someone/some-model")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "could not reach the hub" in info.value.message


def test_unknown_repo_fails_not_found(fake_hub):
    job, ctx, _ = _run("nobody/no-such-model")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "not found" in info.value.message
    assert info.value.code == "not_found"


def test_unknown_revision_fails_not_found(fake_hub, tiny_files):
    fake_hub.repos["test/tiny-sd"] = FakeRepo(tiny_files)
    job, ctx, _ = _run("test/tiny-sd", revision="v9")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "revision" in info.value.message and "not found" in info.value.message


def test_gated_repo_asks_to_accept_the_licence_and_log_in(fake_hub, tiny_files):
    fake_hub.repos["test/gated"] = FakeRepo(tiny_files, gated=True)
    job, ctx, _ = _run("test/gated")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    text = info.value.message + " " + info.value.hint
    assert "licence" in text and "huggingface-cli login" in text


def test_other_pipelines_are_refused_before_any_weight(fake_hub, tiny_files):
    index = json.loads(tiny_files["model_index.json"])
    index["_class_name"] = "StableDiffusionXLPipeline"
    files = {**tiny_files, "model_index.json": json.dumps(index).encode()}
    fake_hub.repos["test/sdxl"] = FakeRepo(files)
    job, ctx, _ = _run("test/sdxl")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "StableDiffusionXLPipeline" in info.value.message
    assert not [p for _, p in fake_hub.requests if p.endswith(".safetensors")]


def test_repo_without_model_index_is_refused(fake_hub):
    fake_hub.repos["test/single-file"] = FakeRepo({"model.safetensors": b"x" * 100})
    job, ctx, _ = _run("test/single-file")
    with pytest.raises(JobFailed) as info:
        hub_job.run_download_job(job.params, ctx, None)
    assert "model_index.json" in info.value.message


def test_a_failure_after_cancel_is_reported_as_the_cancel():
    job, ctx, _ = _run("a/b")
    job.cancel_requested.set()
    with pytest.raises(JobCancelled), hub_job._cancel_wins(ctx):
        raise TimeoutError("a stalled connection timed out after the user cancelled")
