"""Prompt-to-Prompt costs, measured side by side in one run (fastest of --repeats, interleaved):

    python -m benchmarks.edit [--steps 50] [--repeats 3] [--sd15-shape --size 512] [--json OUT]

    P2P edit (first, records the source)   vs plain 2-prompt batch generation    target ≤ 1.15×
    heatmap capture (the picture as is)    vs plain generation                   target ≤ 1.05×
    slider re-render (source replayed)     vs the first edit                     target ≤ 0.6×
    direct-inversion edit (uncached)       vs plain generation                   target ≤ 2.5×
    null-text-inversion edit               vs plain generation                   reference
    subject insertion (a LoRA run on the   vs the same P2P edit without a run     target ≤ 1.2×
      target branch only, first edit)

"Plain" is StableDiffusionPipeline.__call__ with DDIM, the same steps and guidance. Default model:
the shipped toy world on CPU; ``--sd15-shape``: an SD-1.5-shaped model with random weights
(real FLOPs) at --size on CUDA, the card named in the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"p2p_edit": 1.15, "heatmaps": 1.05, "rerender": 0.6, "direct_edit": 2.5, "nulltext_edit": None,
           "subject_edit": 1.2}
SWAP = ("a red star on a blue background", "a green star on a blue background")


def load(sd15: bool, device: str, size: int):
    from engine.models.registry import LoadedModel, ModelRef

    if not sd15:
        from engine.models.registry import ModelCache, resolve_source
        from eval.edit_meaning import DEFAULT_MODEL

        cache = ModelCache()
        cache.load(resolve_source({"source": str(DEFAULT_MODEL), "name": "toy"}), device=device)
        return cache.current
    import torch

    from benchmarks.sd15_shape import build_sd15_shaped_pipeline

    dtype = "float16" if device == "cuda" else "float32"
    pipe = build_sd15_shaped_pipeline().to(device, getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(ModelRef("folder", "sd15-shape", "SD1.5-shaped (random)"), pipe, device, dtype, 0.0)


def random_lora_run(pipe, folder: Path, rank: int = 32, layers: str = "convolutions") -> str:
    """A run's export folder holding a LoRA with random weights (real FLOPs, no training): the toy
    preset's shape (rank 32 on the convolutions) unless told otherwise."""
    import copy

    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from engine.train.export import save_diffusers_lora
    from engine.train.methods import lora_targets

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=lora_targets(layers))
    unet = inject_adapter_in_model(config, copy.deepcopy(pipe.unet).to("cpu", torch.float32), adapter_name="bench")
    state = {k: v * 0.1 for k, v in get_peft_model_state_dict(unet, adapter_name="bench").items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_diffusers_lora(state, config, folder)
    (folder / "run_config.json").write_text(json.dumps({"method": "lora", "token": "<bench-star>",
                                                        "config": {"rank": rank, "lora_layers": layers}}))
    return str(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Prompt-to-Prompt overheads, side by side")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sd15-shape", action="store_true")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-nulltext", action="store_true", help="skip the (slow) null-text reference")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from engine.edit import run_edit_job
    from engine.generate import make_scheduler
    from engine.protocol import validate_job
    from engine.server import EngineState
    from engine.toy import world
    from eval.edit_meaning import quiet_context

    device = args.device
    loaded = load(args.sd15_shape, device, args.size)
    state = EngineState()
    state.model_cache().current = loaded
    pipe = loaded.pipeline
    pipe.scheduler = make_scheduler("ddim", loaded.base_scheduler_config)
    out = Path(tempfile.mkdtemp(prefix="s2s-bench-edit-"))
    size = args.size if args.sd15_shape else loaded.native_resolution

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        started = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - started

    def plain(prompts):
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(prompts))]
        pipe(prompts, num_inference_steps=args.steps, guidance_scale=7.5, height=size, width=size,
             generator=generators)

    seed = [0]

    def edit(**params):
        params = validate_job("edit", {"out_dir": str(out), "steps": args.steps, "name": "bench", "width": size,
                                       "height": size, **params})
        return run_edit_job(params, quiet_context(params), state)

    def first_edit():
        seed[0] += 1  # a new source each time: nothing cached
        edit(source_prompt=SWAP[0], target_prompt=SWAP[1], seed=seed[0])

    def rerender(factor=[1.0]):  # noqa: B006  (a counter: each call a new slider value)
        factor[0] += 0.25
        result = edit(source_prompt=SWAP[0], target_prompt=SWAP[1], seed=seed[0], reweight={"green": factor[0]})
        assert result["reused_source"], "the re-render did not reuse the source branch"

    photo = out / "photo.png"
    from PIL import Image

    pixels, _ = world.render(world.sample_scene(__import__("numpy").random.default_rng(3)), size)
    Image.fromarray(pixels).save(photo)

    def inversion_edit(method):
        state.edit_caches = None  # uncached: the user's first edit of a photo
        edit(source_prompt=SWAP[0], target_prompt=SWAP[1], image=str(photo), invert=method, heatmaps=False)

    run = random_lora_run(pipe, out / "bench-run")
    insert = ("a red star on a blue background", "a <bench-star> star on a blue background")

    def subject_edit():  # the same picture and edit as first_edit, with a run on the target branch
        seed[0] += 1
        result = edit(source_prompt=insert[0], target_prompt=insert[1], seed=seed[0],
                      adapter={"folder": run, "scale": 1.0})
        assert result["subject_branch"] == "target"

    def plain_edit():  # first_edit on the same prompts, the run taken off
        seed[0] += 1
        edit(source_prompt=insert[0], target_prompt=insert[1], seed=seed[0])

    measures = {
        "plain_1": lambda: plain([SWAP[0]]),
        "plain_2": lambda: plain(list(SWAP)),
        "p2p_edit": first_edit,
        "heatmaps": lambda: edit(source_prompt=SWAP[0], seed=0),
        "rerender": rerender,
        "direct_edit": lambda: inversion_edit("direct"),
        "edit_no_run": plain_edit,
        "subject_edit": subject_edit,
    }
    for fn in measures.values():  # warm-up (allocator, kernels, first-call imports)
        fn()
    times = {name: [] for name in measures}
    for _ in range(args.repeats):  # interleaved, so drift hits every measure alike
        for name, fn in measures.items():
            if name == "rerender":
                first_edit()
            times[name].append(timed(fn))
    if not args.no_nulltext:
        times["nulltext_edit"] = [timed(lambda: inversion_edit("nulltext"))]
    # The fastest of interleaved repeats: on a shared 2-core machine the spread is ±20 % and comes
    # from other work, never from the code measured (medians are kept in the JSON).
    median = {name: min(v) for name, v in times.items()}
    medians = {name: statistics.median(v) for name, v in times.items()}
    baselines = {"p2p_edit": "plain_2", "heatmaps": "plain_1", "rerender": "p2p_edit", "direct_edit": "plain_1",
                 "nulltext_edit": "plain_1", "subject_edit": "edit_no_run"}
    card = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    model = f"SD1.5-shaped (random weights) at {size}²" if args.sd15_shape else f"toy world at {size}²"
    print(f"\nPrompt-to-Prompt overheads — {model}, {args.steps} DDIM steps, CFG 7.5, {card}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, fastest of {args.repeats}")
    print(f"{'measure':<16} {'seconds':>8} {'baseline':<10} {'ratio':>6} {'target':>7}  met")
    rows = []
    for name, base in baselines.items():
        if name not in median:
            continue
        ratio = median[name] / median[base]
        target = TARGETS[name]
        met = "—" if target is None else ("yes" if ratio <= target else "NO")
        rows.append({"measure": name, "seconds": median[name], "baseline": base, "baseline_s": median[base],
                     "ratio": ratio, "target": target, "met": met})
        shown = f"≤{target:.2f}×" if target else "—"
        print(f"{name:<16} {median[name]:>8.3f} {base:<10} {ratio:>5.2f}× {shown:>7}  {met}")
    print(f"{'plain_1':<16} {median['plain_1']:>8.3f}\n{'plain_2':<16} {median['plain_2']:>8.3f}")
    # A target-only re-render still runs one full guided prompt: it cannot beat plain_1.
    print(f"re-render floor (plain_1 / p2p_edit): {median['plain_1'] / median['p2p_edit']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps({"model": model, "device": card, "steps": args.steps, "rows": rows,
                                         "medians": medians, "times": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
