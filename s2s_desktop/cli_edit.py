"""``s2s edit``: Prompt-to-Prompt from the terminal, the same job the Edit page runs.

    s2s edit --demo --source "a red star on a blue background" --target "a green star on a blue background" --out DIR
    s2s edit --image photo.png --source "a dog on the beach" --target "a cat on the beach" --invert direct --out DIR
    s2s edit --source "a blue circle" --reweight blue=2.5 --out DIR            (reweight only)
    s2s edit --subject Rex --run 3 --source "a dog on a sofa" --target "a <rex-dog> dog on a sofa" --out DIR

Prints the edited image's path (``--json``: the whole result). Edits are kept in the library's
history, like the ones made on the Edit page.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from engine import protocol
from engine.protocol.editing import EDIT_MODES, INVERSIONS
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
    edit = sub.add_parser("edit", help="edit a generated or real image by changing its prompt (Prompt-to-Prompt)")
    edit.add_argument("--source", required=True, help="prompt that describes the picture as it is")
    edit.add_argument("--target", default="", help="prompt of the picture you want (default: the source)")
    edit.add_argument("--image", type=Path, help="a picture to edit (inverted first); default: generate from --seed")
    edit.add_argument("--invert", choices=INVERSIONS, default="direct", help="inversion method for --image")
    edit.add_argument("--seed", type=int, default=0, help="seed of the generated source picture")
    edit.add_argument("--width", type=int, help="size of the generated source (default: the model's own); "
                      "with --image, the longer side")
    edit.add_argument("--height", type=int)
    edit.add_argument("--reweight", action="append", default=[], metavar="WORD=F",
                      help="scale a word's attention, -2 … 5 (repeat for several)")
    edit.add_argument("--blend", action="append", default=[], metavar="WORD",
                      help="local blend: only the area of these words may change (repeat)")
    edit.add_argument("--blend-threshold", type=float, default=0.3)
    edit.add_argument("--cross-steps", default="0.8", help="share of steps the source's cross-attention is "
                      "injected: F or START,END (default 0.8)")
    edit.add_argument("--self-steps", default="0.4", help="the same for self-attention (default 0.4)")
    edit.add_argument("--word-steps", action="append", default=[], metavar="WORD=F|S,E",
                      help="a target word's own cross-attention schedule, e.g. green=0.2 (repeat)")
    edit.add_argument("--mode", choices=EDIT_MODES, default="auto",
                      help="replace (word swap), refine (added words) or auto")
    edit.add_argument("--negative-prompt", default="")
    edit.add_argument("--steps", type=int, default=50)
    edit.add_argument("--guidance", type=float, default=7.5)
    edit.add_argument("--subject", help="a subject from `s2s subjects list` (with --run: put it in the picture)")
    edit.add_argument("--run", type=int, metavar="RUN_ID", help="a finished training run of --subject")
    edit.add_argument("--lora-scale", type=float, default=1.0)
    edit.add_argument("--no-heatmaps", action="store_true", help="skip the per-word attention maps file")
    edit.add_argument("--out", type=Path, required=True, help="output folder")
    edit.add_argument("--demo", action="store_true", help="use the shipped toy-world model (offline demo)")
    edit.add_argument("--model", help="a model name, folder, file or hub id (default: the active model)")
    edit.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    edit.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt pickle files (they can run code)")
    edit.add_argument("--json", action="store_true", help="print the whole result as JSON")


def parse_schedule(text: str, option: str):
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} must be a fraction like 0.8 or a range like 0.1,0.6; got {text!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts
    raise UsageError(f"{option} takes one fraction or START,END")


def parse_word_steps(items: list[str]) -> dict:
    schedules = {}
    for item in items:
        word, sep, value = item.rpartition("=")
        if not sep or not word:
            raise UsageError(f"--word-steps takes WORD=F or WORD=START,END, e.g. green=0.2; got {item!r}")
        schedules[word] = parse_schedule(value, "--word-steps")
    return schedules


def parse_reweights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        word, sep, value = item.rpartition("=")
        try:
            weights[word] = float(value)
        except ValueError:
            sep = ""
        if not sep or not word:
            raise UsageError(f"--reweight takes WORD=FACTOR, e.g. blue=2.5; got {item!r}")
    return weights


def build_params(args, adapter: dict | None) -> dict:
    if args.image is not None and not args.image.is_file():
        raise UsageError(f"{args.image}: no such file")
    params = {
        "source_prompt": args.source,
        "target_prompt": args.target,
        "negative_prompt": args.negative_prompt,
        "image": str(args.image.expanduser().resolve()) if args.image else "",
        "seed": args.seed,
        "width": args.width,
        "height": args.height,
        "invert": args.invert,
        "steps": args.steps,
        "guidance": args.guidance,
        "mode": args.mode,
        "cross_steps": parse_schedule(args.cross_steps, "--cross-steps"),
        "self_steps": parse_schedule(args.self_steps, "--self-steps"),
        "word_cross_steps": parse_word_steps(args.word_steps) or None,
        "reweight": parse_reweights(args.reweight) or None,
        "blend_words": args.blend or None,
        "blend_threshold": args.blend_threshold,
        "heatmaps": not args.no_heatmaps,
        "adapter": adapter,
        "out_dir": str(args.out.expanduser().resolve()),
        "name": time.strftime("edit-%Y%m%d-%H%M%S"),
    }
    try:  # the engine's own validation, before a model is loaded
        return protocol.validate_job("edit", params)
    except protocol.ProtocolError as exc:
        raise UsageError(exc.message) from None


def subject_adapter(library, args) -> tuple[dict | None, int | None]:
    """The run's export folder as the job's adapter, checked before the engine starts."""
    from s2s_desktop.library import runs as library_runs
    from s2s_desktop.library.catalog import LibraryError

    if args.run is None and args.subject is None:
        return None, None
    if args.run is None or args.subject is None:
        raise UsageError("put a subject in the picture with both --subject NAME and --run RUN_ID")
    try:
        subject = library.subject(args.subject)
        run = library_runs.get_run(library, args.run)
    except LibraryError as exc:
        raise UsageError(str(exc)) from None
    if run.subject_id != subject.id:
        raise UsageError(f"run {run.id} belongs to another subject")
    if not (run.exports_dir / "run_config.json").exists():
        raise UsageError(f"run {run.id} has not finished (no exports yet): `s2s train {subject.name} --resume {run.id}`")
    return {"folder": str(run.exports_dir), "scale": args.lora_scale}, subject.id


def run(args) -> int:
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.library.catalog import Library
    from s2s_desktop.library.edits import record_edit

    library = Library()
    try:
        adapter, subject_id = subject_adapter(library, args)
        params = build_params(args, adapter)
        entry, settings = resolve_model(args.model, args.allow_pickle, demo=args.demo)
        with Session() as session:
            info = session.load(entry.load_params(args.device or settings.device))
            print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
            record = session.run_job("edit", params, "edit")
        if record.state != "finished":
            print(f"s2s: edit {record.state}: {error_text(record.error)}", file=sys.stderr)
            code = (record.error or {}).get("code")
            return EXIT_USAGE if code in INPUT_ERRORS or code == "bad_image" else EXIT_FAILED
        result = record.result or {}
        record_edit(library, params, result, subject_id)
    finally:
        library.close()
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["edited"])
    return EXIT_OK
