"""The bundled engine against the engine run from source, side by side in one run.

    python -m benchmarks.bundle_startup [--dist dist] [--repeats 3]

For each engine, in alternating order: spawn → hello answered → toy-world model loaded → first
image written (one 25-step DDIM image over the protocol, as `s2s generate --demo` makes it). Medians
of the repeats, and the ratio bundled/source (target ≤ 1.5 for spawn → first image). Writes
``benchmarks/results/bundle-startup-<os>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
PHASES = ("hello", "model loaded", "first image", "total")
TARGET_RATIO = 1.5


def time_engine(command: list[str], out_dir: Path, env: dict) -> dict[str, float]:
    """Seconds of each phase for one fresh engine process."""
    from s2s_desktop.demo import toy_model_path
    from s2s_desktop.engine_client import EngineClient

    finished = threading.Event()

    def on_event(message: dict) -> None:
        if message.get("event") in ("finished", "failed", "cancelled"):
            finished.set()

    client = EngineClient(on_event=on_event, auto_restart=False, command=command, env=env, hello_timeout_s=300)
    start = time.perf_counter()
    client.start()
    hello = time.perf_counter()
    client.load_model({"source": str(toy_model_path()), "device": "cpu"}).result(timeout=300)
    loaded = time.perf_counter()
    job = client.submit("generate", {"prompt": "a red star on a blue background", "seed": 0, "steps": 25,
                                     "out_dir": str(out_dir)}).result(timeout=60)["job"]
    if not finished.wait(300) or client.jobs[job].state != "finished":
        raise RuntimeError(f"{command[0]}: the generate job ended {client.jobs[job].state}: {client.jobs[job].error}")
    image = time.perf_counter()
    client.close()
    return {"hello": hello - start, "model loaded": loaded - hello, "first image": image - loaded,
            "total": image - start}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "packaging"))
    from build import executables

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    _, bundled = executables(args.dist.resolve())
    if not bundled.exists():
        print(f"no bundled engine at {bundled}: run `make bundle` first", file=sys.stderr)
        return 2
    engines = {"source": [sys.executable, "-m", "engine", "serve"], "bundled": [str(bundled), "serve"]}
    samples: dict[str, list[dict]] = {name: [] for name in engines}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, S2S_HOME=str(Path(tmp) / "home"), HF_HUB_OFFLINE="1")
        for repeat in range(args.repeats):
            order = list(engines) if repeat % 2 == 0 else list(reversed(engines))  # alternate: no warm-cache bias
            for name in order:
                samples[name].append(time_engine(engines[name], Path(tmp) / f"{name}-{repeat}", env))
    medians = {name: {phase: statistics.median(s[phase] for s in runs) for phase in PHASES}
               for name, runs in samples.items()}
    ratio = medians["bundled"]["total"] / medians["source"]["total"]
    print(f"Engine start to first image, median of {args.repeats} ({platform.platform()}, {os.cpu_count()} CPUs)")
    print()
    print("| phase | from source (s) | bundled (s) | bundled / source |")
    print("|---|---:|---:|---:|")
    for phase in PHASES:
        src, bun = medians["source"][phase], medians["bundled"][phase]
        print(f"| {phase} | {src:.2f} | {bun:.2f} | {bun / src:.2f}× |")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"\nspawn → first image: bundled/source = {ratio:.2f}× ({verdict} the ≤ {TARGET_RATIO}× target)")
    RESULTS.mkdir(exist_ok=True)
    tag = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    (RESULTS / f"bundle-startup-{tag}.json").write_text(json.dumps(
        {"machine": platform.platform(), "cpus": os.cpu_count(), "repeats": args.repeats,
         "medians": medians, "ratio_total": ratio, "samples": samples}, indent=2) + "\n")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
