"""The ``download_model`` job: fetch a Stable Diffusion diffusers repo from the Hugging Face hub.

Only what the engine loads is downloaded, in safetensors form: ``model_index.json``, each
component's config/tokenizer/scheduler files, and each model component's *plain* ``.safetensors``
weights (never ``.bin``/``.ckpt`` pickles, never fp16/ema/non-ema duplicates, never the
safety checker, which the engine does not load). Files go into the normal Hugging Face cache, so
``registry._hub_snapshot(repo_id)`` finds them afterwards.

How it works:
  1. list the repo with sizes (``HfApi.model_info(files_metadata=True)``);
  2. download ``model_index.json`` at the requested revision (this writes ``refs/<revision>``)
     and check that it is a ``StableDiffusionPipeline`` before any weight is fetched;
  3. download the chosen files one by one with ``hf_hub_download`` pinned to that commit. Progress
     is counted in bytes through a ``tqdm_class`` whose ``update()`` calls ``ctx.progress``; that call
     raises ``JobCancelled`` when the user cancels, which unwinds hf_hub's download loop (it deletes
     its ``*.incomplete`` temporary file, so no partial file ever has a final name).

Two hf_hub settings are changed for the duration of a download (the engine runs one job at a time):
  * ``DOWNLOAD_CHUNK_SIZE`` is lowered from 10 MiB: hf_hub calls ``tqdm.update`` once per chunk,
    and a chunk is only handed over when complete, so a 10 MiB chunk on a slow line would delay a
    cancel by many seconds;
  * Xet transfers are disabled (plain HTTP from the hub's CDN instead): hf_xet reports progress from
    a background Rust thread, where an exception cannot stop the transfer, so a cancel would only
    take effect after the whole (multi-GB) file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.jobs import JobCancelled, JobContext, JobFailed
from engine.models.hub_files import (  # noqa: F401  (pipeline_components, weight_variant re-exported for tests)
    CODE_UNSUPPORTED,
    DownloadPlan,
    pipeline_components,
    plan_files,
    weight_variant,
)
from engine.protocol.names import is_hub_id

# hf_hub hands bytes to the progress bar in chunks of this size: the cancel latency on a slow line.
CHUNK_BYTES = 256 * 1024
# Free space kept in reserve beyond the download itself.
DISK_MARGIN_BYTES = 512 * 1024 * 1024


# JobFailed codes (the protocol's error vocabulary where one fits).
CODE_OFFLINE = "hub_unreachable"
CODE_NOT_FOUND = "not_found"
CODE_GATED = "hub_auth"
CODE_DISK = "disk_full"


# ---------------------------------------------------------------------------------------------
# Progress and cancellation


class _Transfer:
    """Bytes done across all files of one job; every update goes to ``ctx.progress`` (which throttles
    the events and raises JobCancelled on cancel)."""

    def __init__(self, ctx: JobContext, total: int):
        self.ctx = ctx
        self.total = total
        self.done = 0
        self.file = ""

    def add(self, n: int) -> None:
        self.done = max(0, self.done + n)
        if self.total <= 0:  # before the plan is known (model_index.json): no total to report yet
            self.ctx.check_cancelled()
            return
        self.report()

    def report(self, force: bool = False) -> None:
        total = max(self.total, 1)
        self.ctx.progress(min(self.done, total), total, force=force, file=self.file, unit="bytes")


def _progress_bar_class(transfer: _Transfer) -> type:
    """A tqdm class for hf_hub's ``tqdm_class``: draws nothing, forwards byte counts to ``transfer``.

    hf_hub creates one bar per file (``cls(total=…, initial=…, unit="B", desc=…)``), enters it as a
    context manager and calls ``update(len(chunk))`` after each chunk it receives, also with a
    negative count when a resumed request restarts from zero. An exception raised by ``update``
    propagates out of ``hf_hub_download``.
    """
    from tqdm import tqdm

    class _ByteBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if n:
                transfer.add(int(n))
            return None

    return _ByteBar


@contextlib.contextmanager
def _cancellable_http_downloads() -> Iterator[None]:
    """Small chunks and plain HTTP for the duration of a download (see the module docstring)."""
    from huggingface_hub import constants

    saved = (constants.DOWNLOAD_CHUNK_SIZE, constants.HF_HUB_DISABLE_XET)
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.DOWNLOAD_CHUNK_SIZE, constants.HF_HUB_DISABLE_XET = saved


# ---------------------------------------------------------------------------------------------
# Errors


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        errors += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(errors)


def _unreachable(repo_id: str, detail: str) -> JobFailed:
    return JobFailed(
        f"could not reach the hub to download {repo_id} ({detail})",
        "check your internet connection (and proxy settings); if HF_HUB_OFFLINE=1 is set, unset it. "
        "A model that is already downloaded can be loaded offline.",
        code=CODE_OFFLINE,
    )


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.is_offline_mode() or env in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _cancel_wins(ctx: JobContext) -> Iterator[None]:
    """A failure that ends a cancelled job (e.g. a stalled connection timing out after the user
    pressed cancel) is reported as the cancel it really is."""
    try:
        yield
    except JobCancelled:
        raise
    except Exception:
        if ctx.cancelled:
            raise JobCancelled() from None
        raise


@contextlib.contextmanager
def _translate_hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn hf_hub's exceptions into JobFailed messages a user can act on."""
    from huggingface_hub import errors as hf_errors

    network = _network_errors()
    try:
        yield
    except (JobCancelled, JobFailed):
        raise
    except hf_errors.OfflineModeIsEnabled:
        raise _unreachable(repo_id, "offline mode is on") from None
    except hf_errors.GatedRepoError:
        raise JobFailed(
            f"{repo_id} is gated: this model needs you to accept its licence / log in",
            f"open https://huggingface.co/{repo_id} in a browser, accept the licence, then run "
            "`huggingface-cli login` (or `hf auth login`) on this computer and try again",
            code=CODE_GATED,
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise JobFailed(
            f"repo not found: {repo_id} does not exist on the hub (or it is private)",
            "check the spelling (owner/name); for a private repo, run `huggingface-cli login` first",
            code=CODE_NOT_FOUND,
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise JobFailed(
            f"revision {revision!r} not found in {repo_id}",
            "leave the revision empty for the latest version, or give an existing branch, tag or commit",
            code=CODE_NOT_FOUND,
        ) from None
    except hf_errors.RemoteEntryNotFoundError as exc:
        raise JobFailed(
            f"a file of {repo_id} is missing on the hub: {exc.args[0].splitlines()[-1] if exc.args else exc}",
            "the repo changed during the download; try again",
            code=CODE_NOT_FOUND,
        ) from None
    except hf_errors.DisabledRepoError:
        raise JobFailed(
            f"{repo_id} has been disabled on the hub", "choose another model", code=CODE_NOT_FOUND
        ) from None
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise JobFailed(
                f"the hub refused access to {repo_id} (HTTP {status})",
                "this model needs you to accept its licence / log in: accept it on the model page, then "
                "run `huggingface-cli login`; if you are logged in, check that your token is valid",
                code=CODE_GATED,
            ) from None
        if status == 429:
            raise JobFailed(
                "the hub is rate-limiting downloads (HTTP 429)",
                "wait a few minutes and try again",
                code=CODE_OFFLINE,
            ) from None
        raise JobFailed(
            f"the hub answered with an error for {repo_id} (HTTP {status})",
            "the hub may be having problems; try again later",
            code=CODE_OFFLINE,
        ) from None
    except hf_errors.LocalEntryNotFoundError as exc:
        # hf_hub_download's way of saying the HEAD request failed for network reasons.
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else "no connection"
        raise _unreachable(repo_id, detail[:200]) from None
    except network as exc:
        raise _unreachable(repo_id, f"{type(exc).__name__}: {exc}"[:200]) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise JobFailed(
                "the disk filled up while downloading",
                "free some space, or point HF_HUB_CACHE at a bigger disk, then download again",
                code=CODE_DISK,
            ) from None
        if "Consistency check failed" in str(exc):
            raise JobFailed(
                f"a file of {repo_id} arrived incomplete (the connection dropped)",
                "download again: finished files are kept",
                code=CODE_OFFLINE,
            ) from None
        raise


# ---------------------------------------------------------------------------------------------
# The job


def _repo_sizes(info: Any) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for sibling in info.siblings or []:
        size = sibling.lfs.size if sibling.lfs is not None else sibling.size
        sizes[sibling.rfilename] = size
    return sizes


def _check_pipeline(repo_id: str, index_path: str) -> dict:
    from engine.models.registry import SUPPORTED_PIPELINES

    try:
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFailed(
            f"{repo_id}: model_index.json is not readable ({exc})",
            "choose another repo",
            code=CODE_UNSUPPORTED,
        ) from None
    if not isinstance(index, dict):
        raise JobFailed(
            f"{repo_id}: model_index.json is not a JSON object", "choose another repo", code=CODE_UNSUPPORTED
        )
    cls = index.get("_class_name")
    if cls not in SUPPORTED_PIPELINES:
        raise JobFailed(
            f"{repo_id} is a {cls or 'pipeline of unknown type'}, not a StableDiffusionPipeline; "
            "this version supports Stable Diffusion 1.x/2.x models",
            "choose a Stable Diffusion 1.5-family diffusers repo (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)",
            code=CODE_UNSUPPORTED,
        )
    return index


def _check_disk_space(cache_dir: Path, needed: int) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if needed + DISK_MARGIN_BYTES > free:
        raise JobFailed(
            f"not enough disk space: the download needs {needed / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB are free in {cache_dir}",
            "free some space, or set HF_HUB_CACHE to a folder on a bigger disk and restart the app",
            code=CODE_DISK,
        )


def _endpoint() -> str | None:
    """HF_ENDPOINT as hf_hub reads it, but at call time (hf_hub caches it at import)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def run_download_job(params: dict, ctx: JobContext, state: Any = None) -> dict:
    """Download ``params["repo_id"]`` (at ``params["revision"]``) into the HF cache; see module doc."""
    repo_id = params["repo_id"].strip()
    revision = params.get("revision") or None
    if not is_hub_id(repo_id):
        raise JobFailed(
            f"{repo_id[:200]!r} is not a hub id", "a hub id looks like owner/name", code="invalid_params"
        )
    if _offline():
        raise _unreachable(repo_id, "offline mode is on: HF_HUB_OFFLINE is set")

    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache

    endpoint = _endpoint()
    api = HfApi(endpoint=endpoint)
    with _cancel_wins(ctx), _translate_hub_errors(repo_id, revision), _cancellable_http_downloads():
        ctx.log(f"listing {repo_id}" + (f"@{revision}" if revision else ""))
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        sizes = _repo_sizes(info)
        if "model_index.json" not in sizes:
            raise JobFailed(
                f"{repo_id} is not a diffusers model (it has no model_index.json)",
                "this needs a diffusers-format repo; a single .safetensors checkpoint can be downloaded "
                "separately and opened as a file",
                code=CODE_UNSUPPORTED,
            )
        ctx.check_cancelled()

        # model_index.json first, at the requested revision: this records refs/<revision> in the
        # cache (so snapshot_download(repo_id, local_files_only=True) finds the snapshot) and tells
        # us the commit, to which every other file is pinned.
        transfer = _Transfer(ctx, 0)
        transfer.file = "model_index.json"
        bar = _progress_bar_class(transfer)
        index_path = hf_hub_download(
            repo_id, "model_index.json", revision=revision, endpoint=endpoint, tqdm_class=bar
        )
        snapshot = Path(index_path).parent
        commit = snapshot.name
        if info.sha and info.sha != commit:  # the branch moved between the two calls
            info = api.model_info(repo_id, revision=commit, files_metadata=True)
            sizes = _repo_sizes(info)
        model_index = _check_pipeline(repo_id, index_path)
        plan = plan_files(repo_id, sizes, model_index)
        if plan.skipped:
            ctx.log(
                f"skipping {len(plan.skipped)} file(s) not needed in safetensors form: "
                + ", ".join(plan.skipped[:8])
                + (" …" if len(plan.skipped) > 8 else "")
            )

        cached = {
            p for p in plan.files if isinstance(try_to_load_from_cache(repo_id, p, revision=commit), str)
        }
        _check_disk_space(
            Path(constants.HF_HUB_CACHE), sum(plan.sizes[p] or 0 for p in plan.files if p not in cached)
        )

        transfer.total = plan.total_bytes
        transfer.done = sum(plan.sizes[p] or 0 for p in cached | {"model_index.json"})
        transfer.report(force=True)
        for filename in plan.files:
            if filename in cached or filename == "model_index.json":
                continue
            transfer.file = filename
            start = transfer.done
            local = hf_hub_download(repo_id, filename, revision=commit, endpoint=endpoint, tqdm_class=bar)
            actual = os.path.getsize(local)
            expected = plan.sizes[filename]
            if expected is None:
                transfer.total += actual
            if transfer.done != start + actual:  # cached blob (no transfer) or a size that differed
                transfer.done = start + actual
                transfer.report()
        if transfer.done != transfer.total:  # a size the listing got wrong: still end at 100 %
            transfer.done = transfer.total
            transfer.report(force=True)

    from engine.models.registry import check_safetensors_header

    for filename in plan.files:
        if filename.endswith(".safetensors"):
            check_safetensors_header(snapshot / filename)
    return {
        "repo_id": repo_id,
        "revision": revision or constants.DEFAULT_REVISION,
        "commit": commit,
        "path": str(snapshot),
        "bytes": transfer.total,
        "files": len(plan.files),
    }
