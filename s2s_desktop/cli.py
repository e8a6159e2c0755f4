"""``s2s``: the GUI with no arguments; subcommands drive the same engine headless.

Exit codes: 0 ok, 1 a job failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine import protocol
from engine.protocol.names import is_hub_id
from s2s_desktop import __version__, cli_edit, cli_gallery, cli_subjects, cli_train
from s2s_desktop.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    INPUT_ERRORS,
    PAGES,
    Session,
    UsageError,
    error_text,
)
from s2s_desktop.engine_client import EngineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="Subject2Subject: personalised text-to-image.")
    parser.add_argument("--version", action="version", version=f"s2s {__version__}")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render the main window offscreen to a PNG and exit")
    parser.add_argument("--page", choices=PAGES, default="generate", help="page to open (with --screenshot or the GUI)")
    sub = parser.add_subparsers(dest="command")

    models = sub.add_parser("models", help="base models: add, list")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    add = models_sub.add_parser("add", help="add a diffusers folder, a .safetensors file or a hub id")
    add.add_argument("source", help="folder, checkpoint file, or hub id (owner/name)")
    add.add_argument("--name", help="name to show (default: from the path or id)")
    add.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt pickle files (they can run code)")
    add.add_argument("--config", help="diffusers folder describing a single checkpoint file (for offline use)")
    add.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    listing = models_sub.add_parser("list", help="list the models you added")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    cli_subjects.add_parser(sub)
    cli_train.add_parser(sub)
    cli_edit.add_parser(sub)

    gen = sub.add_parser("generate", help="text-to-image with a base model, or a runs × prompts × seeds gallery")
    gen.add_argument("--demo", action="store_true", help="use the shipped toy-world model (offline demo)")
    gen.add_argument("--model", help="a model name from `s2s models list`, a folder, a file or a hub id (default: active)")
    gen.add_argument("--prompt", action="append", default=[], help="prompt (repeat for several)")
    gen.add_argument("--prompts", type=Path, help="text file with one prompt per line")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=25)
    gen.add_argument("--guidance", type=float, default=7.5)
    gen.add_argument("--width", type=int, help="default: the model's native size")
    gen.add_argument("--height", type=int, help="default: the model's native size")
    gen.add_argument("--batch", type=int, default=1, help="images per prompt (seeds seed, seed+1, …)")
    gen.add_argument("--scheduler", choices=protocol.SCHEDULERS, default="ddim")
    gen.add_argument("--out", type=Path, required=True, help="output folder")
    gen.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    gen.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt pickle files (they can run code)")
    gen.add_argument("--json", action="store_true", help="print a JSON summary instead of paths")
    cli_gallery.add_gallery_arguments(gen)
    cli_gallery.add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.screenshot:
            from s2s_desktop.app import screenshot

            print(screenshot(args.screenshot, args.page))
            return EXIT_OK
        if args.command is None:
            from s2s_desktop.app import run_gui

            return run_gui(page=args.page)
        if args.command == "models":
            return models_list(args) if args.models_command == "list" else models_add(args)
        if args.command == "generate":
            return cli_gallery.generate_gallery(args) if args.subject else generate(args)
        if args.command == "evaluate":
            return cli_gallery.evaluate(args)
        if args.command == "subjects":
            return cli_subjects.run(args)
        if args.command == "train":
            return cli_train.run(args)
        if args.command == "edit":
            return cli_edit.run(args)
    except UsageError as exc:
        print(f"s2s: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EngineError as exc:  # the engine failed (not the input): a message, not a traceback
        print(f"s2s: {error_text({'message': exc.message, 'hint': exc.hint})}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("s2s: interrupted", file=sys.stderr)
        return 130
    parser.print_usage(sys.stderr)
    return EXIT_USAGE


# models


def models_list(args) -> int:
    from s2s_desktop.settings import Settings

    settings = Settings.load()
    if args.json:
        rows = [dict(vars(m), active=m.name == settings.active_model) for m in settings.models]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not settings.models:
        print("No models yet. Add one: s2s models add PATH|HUB_ID")
    for m in settings.models:
        marker = "*" if m.name == settings.active_model else " "
        print(f"{marker} {m.name:<28} {m.kind or '?':<12} {m.source}")
    return EXIT_OK


def models_add(args) -> int:
    from s2s_desktop.settings import ModelEntry, Settings

    settings = Settings.load()
    source = args.source
    local = Path(source).expanduser()
    if local.exists():
        source = str(local.resolve())
    name = args.name or (local.stem if local.is_file() else local.name if local.exists() else source.split("/")[-1])
    entry = ModelEntry(name=name, source=source, allow_pickle=args.allow_pickle, config=args.config)
    if not local.exists() and not is_hub_id(source):
        raise UsageError(
            f"no file or folder at {local} (and {source!r} is not a hub id like owner/name): "
            "check the path, or give a hub id to download"
        )
    with Session() as session:
        if not local.exists():
            record = session.run_job("download_model", {"repo_id": source}, f"download {source}")
            if record.state != "finished":
                print(f"s2s: download {record.state}: {error_text(record.error)}", file=sys.stderr)
                return EXIT_FAILED
        info = session.load(entry.load_params(args.device or settings.device))
    entry.kind = info["kind"]
    settings.add_model(entry)
    settings.active_model = entry.name
    settings.save()
    if args.json:
        print(json.dumps({"model": vars(entry), "loaded": info}, indent=2))
    else:
        print(f"added {entry.name} ({info['kind']}, native {info['native_resolution']} px); it is now the active model")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# generate


def resolve_model(spec: str | None, allow_pickle: bool, demo: bool = False):
    from s2s_desktop.demo import demo_entry, toy_model_available
    from s2s_desktop.settings import ModelEntry, Settings

    settings = Settings.load()
    if demo:
        if spec is not None:
            raise UsageError("give either --demo or --model, not both")
        if not toy_model_available():
            raise UsageError("the toy-world model is missing from this installation (resources/toy-world)")
        return demo_entry(), settings
    if spec is None:
        if settings.active is None:
            raise UsageError("no model given and none is active: pass --model PATH or run `s2s models add`")
        return settings.active, settings
    entry = settings.find_model(spec)
    if entry is not None:
        return entry, settings
    path = Path(spec).expanduser()
    source = str(path.resolve()) if path.exists() else spec
    return ModelEntry(name=path.stem if path.exists() else spec, source=source, allow_pickle=allow_pickle), settings


def read_prompts(args) -> list[str]:
    prompts = [p for p in args.prompt if p.strip()]
    if args.prompts:
        try:
            lines = args.prompts.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read {args.prompts}: {exc.strerror}") from None
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError("give at least one --prompt or a --prompts file")
    return prompts


def generate(args) -> int:
    if args.run or args.checkpoints or args.seeds:
        raise UsageError("--run, --checkpoints and --seeds make a comparison gallery: give --subject NAME too")
    prompts = read_prompts(args)
    entry, settings = resolve_model(args.model, args.allow_pickle, demo=args.demo)
    out_dir = args.out.expanduser().resolve()
    base = {
        "negative_prompt": args.negative_prompt,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "width": args.width,
        "height": args.height,
        "batch": args.batch,
        "scheduler": args.scheduler,
        "out_dir": str(out_dir),
    }
    try:  # the same validation the engine applies, before spending time on loading a model
        protocol.validate_job("generate", dict(base, prompt=prompts[0]))
    except protocol.ProtocolError as exc:
        raise UsageError(exc.message) from None
    started = time.perf_counter()
    images, failures = [], []
    with Session() as session:
        info = session.load(entry.load_params(args.device or settings.device))
        print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
        for index, prompt in enumerate(prompts, 1):
            record = session.run_job("generate", dict(base, prompt=prompt), f"[{index}/{len(prompts)}]")
            if record.state == "finished":
                images += [{"path": a["path"], "prompt": prompt, "seed": a.get("seed")} for a in record.artifacts]
            else:
                failures.append({"prompt": prompt, "state": record.state, "error": record.error})
                print(f"s2s: {prompt[:60]!r}: {record.state}: {error_text(record.error)}", file=sys.stderr)
                if record.error and record.error.get("code") in INPUT_ERRORS and len(prompts) == 1:
                    return EXIT_USAGE
    if args.json:
        print(json.dumps({"images": images, "failed": failures, "seconds": round(time.perf_counter() - started, 2)}, indent=2))
    else:
        for image in images:
            print(image["path"])
    return EXIT_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
