"""Run a training run without the app: on a server, or data-parallel on several GPUs.

    python -m engine.train.headless RUN.json
    accelerate launch --multi_gpu --num_processes 4 -m engine.train.headless RUN.json
    torchrun --nproc_per_node 2 -m engine.train.headless RUN.json        # also works on CPU (gloo)

RUN.json is what the Train page's "Export launch command" and ``s2s train --export-launch DIR``
write: ``{"version": 1, "model": {load_model params}, "job": {train job params}}`` — the same
run the app would submit to its engine, so results, checkpoints and exports are identical in
layout and the app can resume it. Each process trains on its own batches (seeded by rank);
process 0 makes class images, writes checkpoints, samples and exports.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from engine.protocol.training import read_launch


class ConsoleContext:
    """The JobContext surface the trainer uses, printing on process 0 only."""

    def __init__(self, rank: int):
        self.rank, self.started, self.last = rank, time.monotonic(), 0.0

    def _print(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def progress(self, step, total, *, force=False, **extra) -> bool:
        now = time.monotonic()
        if force or step >= total or now - self.last >= 2.0:
            self.last = now
            loss = f" loss {extra['loss']:.4f}" if "loss" in extra else ""
            self._print(f"[{extra.get('phase', '')}] {step}/{total}{loss}")
            return True
        return False

    def artifact(self, path, kind, **meta) -> None:
        self._print(f"{kind}: {path}")

    def log(self, message, level="info") -> None:
        self._print(message)

    def check_cancelled(self) -> None:
        pass

    cancelled = False

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    model_params, job = read_launch(Path(args[0]))

    import torch

    from engine import devices
    from engine.models.registry import ModelCache, resolve_source
    from engine.train.loop import RunSpec, Trainer

    devices.configure_environment()
    rank = int(os.environ.get("RANK", 0))
    device = devices.select_device(model_params.get("device", "auto"))
    if device.startswith("cuda"):  # one GPU per process: "cuda" means this process's card
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    cache = ModelCache()
    cache.load(resolve_source(model_params), device)
    spec = RunSpec(
        method=job["method"], token=job["token"], class_noun=job["class_noun"], images=job["images"],
        run_dir=Path(job["run_dir"]), config=job["config"],
        class_cache_dir=Path(job["class_cache_dir"]) if job["class_cache_dir"] else None,
        resume=job["resume"], preflight=job["preflight"],
    )
    trainer = Trainer(cache.current, spec, ConsoleContext(rank))
    result = trainer.run()
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # gloo aborts at exit otherwise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
