"""Foundation benchmarks, measured side by side in one run and printed as a table.

    python -m benchmarks.bench_foundation                 # CPU: tiny model, 128 px
    python -m benchmarks.bench_foundation --sd15 --size 512 --steps 25   # GPU: SD-1.5-shaped UNet

Rows:
  * window cold start: ``s2s --screenshot`` in a fresh process (import Qt, build window, render), median of 5;
  * engine spawn → hello answered, median of 5; hello round trip on a warm engine, median of 200;
  * generation: the plain diffusers pipeline call vs our in-process path (scheduler swap, per-step
    progress/cancel callback) vs a whole engine job over the protocol (PNG + metadata written),
    interleaved A/B/C repeats, medians, and the ratio ours/plain (target ≤ 1.05 in-process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

RESULTS = Path(__file__).parent / "results"


def median_time(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_window_cold_start(repeats: int = 5) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, S2S_HOME=tmp)
        cmd = [sys.executable, "-m", "s2s_desktop.cli", "--screenshot", f"{tmp}/shot.png"]
        return median_time(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True), repeats)


def bench_engine_hello(repeats: int = 5) -> tuple[float, float]:
    from s2s_desktop.engine_client import EngineClient

    spawn = []
    for _ in range(repeats):
        client = EngineClient(auto_restart=False)
        start = time.perf_counter()
        client.start()
        spawn.append(time.perf_counter() - start)
        client.close()
    client = EngineClient(auto_restart=False)
    client.start()
    round_trip = median_time(lambda: client.call("hello", timeout=10), 200)
    client.close()
    return statistics.median(spawn), round_trip


def bench_generation(model_dir: Path, size: int, steps: int, repeats: int, device: str) -> dict:
    import torch

    from engine import devices
    from engine.generate import GenerationSettings, generate_images
    from engine.jobs import Job, JobContext
    from engine.models.registry import ModelCache, resolve_source
    from s2s_desktop.engine_client import EngineClient

    cache = ModelCache()
    cache.load(resolve_source({"source": str(model_dir)}), device=device)
    loaded = cache.current
    pipe = loaded.pipeline
    settings = GenerationSettings("a red star on a blue background", "", 1, steps, 7.5, size, size, "ddim", "bench")
    sync = torch.cuda.synchronize if loaded.device.startswith("cuda") else (lambda: None)
    if loaded.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def plain():
        pipe(
            settings.prompt, num_inference_steps=steps, guidance_scale=7.5, width=size, height=size,
            generator=torch.Generator("cpu").manual_seed(1), output_type="pil",
        )
        sync()

    def ours():
        generate_images(loaded, settings, 1, JobContext(Job("generate", {}), lambda m: None))
        sync()

    client = EngineClient(auto_restart=False, env=dict(os.environ, S2S_DEVICE=device))
    client.start()
    client.load_model({"source": str(model_dir)}).result(timeout=600)
    done = threading.Event()
    client.on_event = lambda m: done.set() if m.get("event") in ("finished", "failed", "cancelled") else None
    out_dir = tempfile.mkdtemp()

    def engine_job():
        done.clear()
        client.submit("generate", {"prompt": settings.prompt, "seed": 1, "steps": steps, "width": size,
                                   "height": size, "out_dir": out_dir}).result(timeout=60)
        done.wait(600)

    plain(), ours(), engine_job()  # warm-up (kernels, allocator, caches)
    samples = {"plain": [], "ours": [], "engine": []}
    for _ in range(repeats):  # interleaved so drift hits all three alike
        for name, fn in (("plain", plain), ("ours", ours), ("engine", engine_job)):
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    client.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    peak = devices.peak_memory_bytes(loaded.device)
    return {
        "device": loaded.device,
        "dtype": loaded.dtype,
        "size": size,
        "steps": steps,
        "repeats": repeats,
        "plain_s": med["plain"],
        "ours_s": med["ours"],
        "engine_job_s": med["engine"],
        "ours_over_plain": med["ours"] / med["plain"],
        "engine_over_plain": med["engine"] / med["plain"],
        "peak_memory_gib": round(peak / 2**30, 2) if peak else None,
    }


def machine_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sd15", action="store_true", help="SD-1.5-shaped random model instead of the tiny one")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default: benchmarks/results/)")
    args = parser.parse_args(argv)

    rows = []
    if not args.skip_startup:
        cold = bench_window_cold_start()
        spawn, round_trip = bench_engine_hello()
        rows += [
            ("window cold start (`s2s --screenshot`), median of 5", f"{cold:.2f} s", ""),
            ("engine spawn → hello answered, median of 5", f"{spawn:.2f} s", ""),
            ("hello round trip on a warm engine, median of 200", f"{round_trip * 1000:.2f} ms", ""),
        ]
    with tempfile.TemporaryDirectory() as tmp:
        if args.sd15:
            from benchmarks.sd15_shape import build_sd15_shaped_pipeline

            build_sd15_shaped_pipeline().save_pretrained(tmp, safe_serialization=True)
            model = "SD-1.5-shaped (random weights)"
        else:
            from engine.models.tiny import save_tiny_pipeline

            save_tiny_pipeline(tmp)
            model = "tiny SD-shaped"
        gen = bench_generation(Path(tmp), args.size, args.steps, args.repeats, args.device)
    label = f"{model}, {gen['size']}², {gen['steps']} DDIM steps, CFG, {gen['device']} {gen['dtype']}"
    rows += [
        (f"plain diffusers pipeline call ({label})", f"{gen['plain_s']:.3f} s", "1.00×"),
        ("our in-process generate path (same settings)", f"{gen['ours_s']:.3f} s", f"{gen['ours_over_plain']:.3f}×"),
        ("whole engine job over the protocol (+ PNG write, events)", f"{gen['engine_job_s']:.3f} s",
         f"{gen['engine_over_plain']:.3f}×"),
    ]
    if gen["peak_memory_gib"]:
        rows.append(("peak device memory during generation", f"{gen['peak_memory_gib']} GiB", ""))
    machine = machine_description()
    print(f"\nMachine: {machine}\n")
    print("| measurement | value | vs plain |\n|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")
    out = args.out or RESULTS / f"foundation-{gen['device'].split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "model": model, "rows": rows, "generation": gen}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
