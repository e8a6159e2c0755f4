"""``s2s train SUBJECT --method dreambooth|lora|ti|pivotal``: a personalisation run from the terminal.

The run is recorded in the library like one started from the Train page: Ctrl-C cancels it and
keeps its last checkpoint; ``--resume RUN_ID`` continues it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import protocol
from engine.protocol import training
from s2s_desktop.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    INPUT_ERRORS,
    Session,
    UsageError,
    error_text,
)


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="teach the model a subject (DreamBooth, LoRA, TI, pivotal)")
    train.add_argument("subject", help="a subject from `s2s subjects list`")
    train.add_argument("--method", choices=training.METHODS, default="lora")
    train.add_argument("--steps", type=int)
    train.add_argument("--lr", type=float, help="learning rate (UNet / LoRA)")
    train.add_argument("--embedding-lr", type=float, help="learning rate of the new word (ti, pivotal)")
    train.add_argument("--rank", type=int, help="LoRA rank")
    train.add_argument("--lora-layers", choices=training.LORA_LAYERS,
                       help="where LoRA layers go: attention (default), convolutions (ResNet + feed-forward) or all")
    train.add_argument("--batch", type=int)
    train.add_argument("--prior", action=argparse.BooleanOptionalAction, default=None,
                       help="prior preservation with class images (default: on except for ti)")
    train.add_argument("--class-images", type=int, help="how many class images for the prior")
    train.add_argument("--config", type=Path, help="JSON file with any training fields (see --show-config)")
    train.add_argument("--show-config", action="store_true", help="print the preset as JSON and exit")
    train.add_argument("--preflight", action="store_true", help="2 steps + 1 sample: time per step, memory, ETA")
    train.add_argument("--export-launch", type=Path, metavar="DIR",
                       help="write DIR/run.json and print the accelerate/torchrun command instead of training here")
    train.add_argument("--resume", type=int, metavar="RUN_ID", help="continue a stopped run from its checkpoint")
    train.add_argument("--demo", action="store_true", help="train on the shipped toy-world model")
    train.add_argument("--model", help="a model from `s2s models list`, a folder, file or hub id (default: active)")
    train.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    train.add_argument("--json", action="store_true", help="print a JSON summary")


def build_config(args, n_images: int, device: str, toy: bool, base: dict | None = None) -> dict:
    config = dict(base) if base else training.preset(args.method, n_images, device.split(":")[0], toy=toy)
    if args.config:
        try:
            config.update(json.loads(args.config.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {args.config}: {exc}") from None
    overrides = {
        "steps": args.steps, "learning_rate": args.lr, "embedding_learning_rate": args.embedding_lr,
        "rank": args.rank, "lora_layers": args.lora_layers, "batch": args.batch, "prior": args.prior,
        "class_images": args.class_images,
    }
    config.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return training.validate_config(config)
    except protocol.ProtocolError as exc:
        raise UsageError(exc.message) from None


def run(args) -> int:
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.library import Library, LibraryError
    from s2s_desktop.library import runs as library_runs

    library = Library()
    try:
        subject = library.subject(args.subject)
        previous = library_runs.get_run(library, args.resume) if args.resume else None
    except LibraryError as exc:
        raise UsageError(str(exc)) from None
    if previous is not None:
        if previous.subject_id != subject.id:
            raise UsageError(f"run {previous.id} belongs to another subject")
        args.method = previous.method
    n_images = subject.image_count
    if n_images == 0:
        raise UsageError(f"{subject.name} has no photos: add some with `s2s subjects add {subject.name} PHOTO…`")
    if args.show_config:
        print(json.dumps(build_config(args, n_images, args.device or "cpu", args.demo), indent=2))
        return EXIT_OK
    entry, settings = resolve_model(args.model, False, args.demo)
    with Session() as session:
        info = session.load(entry.load_params(args.device or settings.device))
        print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
        toy = args.demo or Path(entry.source).name == "toy-world"
        config = build_config(args, n_images, info["device"], toy, previous.config if previous else None)
        resolution = config["resolution"] or info["native_resolution"]
        if args.preflight:  # a timing test: no run in the subject's history
            run_record, folder = None, library_runs.preflight_folder(library, subject.id)
        else:
            run_record = previous or library_runs.create_run(library, subject, args.method, config, entry.name)
            folder = run_record.folder
        images = library_runs.prepare_training_images(library, subject.id, folder, resolution)
        params = library_runs.train_params(library, subject, args.method, config, folder, images,
                                           resume=previous is not None, preflight=args.preflight)
        if args.export_launch and run_record is not None:
            path = training.write_launch(args.export_launch, entry.load_params(args.device or settings.device), params)
            library_runs.update_run(library, run_record.id, status="cancelled", error=f"exported to {path}")
            print("\n".join(training.launch_commands(path)))
            print(f"run {run_record.id} is ready in {run_record.folder}; the app can resume it afterwards "
                  f"(s2s train {subject.name} --resume {run_record.id})", file=sys.stderr)
            return EXIT_OK
        if run_record is not None:
            library_runs.update_run(library, run_record.id, status="running")
        label = "preflight" if args.preflight else f"{args.method} {subject.name}"
        try:
            record = session.run_job("train", params, label)
        except KeyboardInterrupt:
            if run_record is None:
                raise
            library_runs.update_run(library, run_record.id, status="cancelled", error="interrupted (Ctrl-C)")
            print(f"s2s: stopped; resume with: s2s train {subject.name} --resume {run_record.id}", file=sys.stderr)
            raise
    return report(library, run_record, record, args)


def report(library, run_record, record, args) -> int:
    from s2s_desktop.library import runs as library_runs

    if args.preflight:
        if record.state != "finished":
            print(f"s2s: preflight {record.state}: {error_text(record.error)}", file=sys.stderr)
            return EXIT_FAILED
        result = record.result
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            peak = result.get("peak_memory_bytes")
            print(f"{result['seconds_per_step']:.3f} s/step · peak memory "
                  f"{peak / 2**30:.2f} GiB · ETA {result['eta_seconds'] / 60:.1f} min for {result['steps']} steps"
                  if peak else f"{result['seconds_per_step']:.3f} s/step · ETA {result['eta_seconds'] / 60:.1f} min")
        return EXIT_OK
    step = record.step or 0
    if record.state == "finished":
        library_runs.update_run(library, run_record.id, status="finished", step=record.result.get("step", step),
                                result=record.result)
        if args.json:
            print(json.dumps(dict(record.result, run=run_record.id), indent=2))
        else:
            for item in record.result.get("exports", []):
                print(item["path"])
            print(f"run {run_record.id} finished: {run_record.folder}", file=sys.stderr)
        return EXIT_OK
    library_runs.update_run(library, run_record.id, status=record.state, step=step, error=error_text(record.error))
    print(f"s2s: training {record.state}: {error_text(record.error)}", file=sys.stderr)
    print(f"resume with: s2s train {args.subject} --resume {run_record.id}", file=sys.stderr)
    if record.error and record.error.get("code") in INPUT_ERRORS | {"invalid_params", "invalid_config"}:
        return EXIT_USAGE
    return EXIT_FAILED
