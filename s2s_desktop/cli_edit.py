"""``s2s edit``: Prompt-to-Prompt from the terminal, the same job the Edit page runs.

    s2s edit --demo --source "a red star on a blue background" --target "a green star on a blue background" --out DIR
    s2s edit --image photo.png --source "a dog on the beach" --target "a cat on the beach" --invert direct --out DIR
    s2s edit --source "a blue circle" --reweight blue=2.5 --out DIR            (reweight only)
    s2s edit --subject Rex --run 3 --image sofa.png --source "a dog on a sofa" --out DIR   (put Rex in)
    s2s edit --subject Rex --run 3 --source "a cat on a sofa" --into cat --seed 4 --out DIR
    s2s edit --subject Rex --run 3 --batch FOLDER [--source "a dog on a sofa"] --out DIR

With --subject/--run the subject goes into the picture: the word --into (default: the subject's
class noun) becomes the subject's token in the target prompt, the run is applied to the edited
branch only (the original stays as it is), and the measured insertion settings are the defaults.
--batch does that for every picture of a folder: pictures the app made regenerate from their own
prompt and seed, others are inverted with --source as their prompt; the results and an
original | edited grid (insertion-grid.png) are written as they finish, so Ctrl-C keeps them.

Prints the edited image's path (``--json``: the whole result). Edits are kept in the library's
history, like the ones made on the Edit page.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine import protocol
from engine.protocol.editing import (
    EDIT_MODES,
    INSERTION_DEFAULTS,
    INVERSIONS,
    insertion_blend_words,
    insertion_target,
)
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
    edit.add_argument("--source", default="", help="prompt that describes the picture as it is (required, "
                      "except for --batch pictures the app made)")
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
    edit.add_argument("--no-blend", action="store_true", help="no local blend (a subject insertion blends "
                      "on the object's words by default)")
    edit.add_argument("--blend-threshold", type=float, default=None, help="default 0.3")
    edit.add_argument("--cross-steps", default=None, help="share of steps the source's cross-attention is "
                      "injected: F or START,END (default 0.8; with --subject the insertion default)")
    edit.add_argument("--self-steps", default=None, help="the same for self-attention (default 0.4)")
    edit.add_argument("--shared-steps", type=float, default=None, help="share of the first steps the edited "
                      "picture takes the original's latents (keeps the layout; default 0, with --subject 0.3)")
    edit.add_argument("--word-steps", action="append", default=[], metavar="WORD=F|S,E",
                      help="a target word's own cross-attention schedule, e.g. green=0.2 (repeat)")
    edit.add_argument("--mode", choices=EDIT_MODES, default="auto",
                      help="replace (word swap), refine (added words) or auto")
    edit.add_argument("--negative-prompt", default="")
    edit.add_argument("--steps", type=int, default=50)
    edit.add_argument("--guidance", type=float, default=7.5)
    edit.add_argument("--subject", help="a subject from `s2s subjects list` (with --run: put it in the picture)")
    edit.add_argument("--run", type=int, metavar="RUN_ID", help="a finished training run of --subject")
    edit.add_argument("--into", metavar="WORD", help="with --subject: the word of the source prompt the subject "
                      "takes the place of (default: the subject's class noun)")
    edit.add_argument("--batch", type=Path, metavar="DIR", help="with --subject: every picture in this folder")
    edit.add_argument("--lora-scale", type=float, default=None, help="strength of the run (default 1)")
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


def build_params(args, adapter: dict | None, insertion: Insertion | None = None, source: dict | None = None) -> dict:
    """The edit job's parameters. ``source``: one picture of a batch (its prompt, seed, image)."""
    source = source or {"source_prompt": args.source, "image": args.image, "seed": args.seed,
                        "width": args.width, "height": args.height}
    image = source["image"]
    if image is not None and not Path(image).is_file():
        raise UsageError(f"{image}: no such file")
    if not source["source_prompt"].strip():
        raise UsageError("give --source: the prompt that describes the picture as it is")
    defaults = INSERTION_DEFAULTS if insertion else {"cross_steps": 0.8, "self_steps": 0.4, "blend_threshold": 0.3,
                                                     "shared_steps": 0.0}
    target, blend = args.target, args.blend or None
    if insertion is not None:
        if not target:
            try:
                target = insertion_target(source["source_prompt"], insertion.into, insertion.token, insertion.class_noun)
            except ValueError as exc:
                raise UsageError(f"{exc}: name one with --into WORD, or give the whole --target") from None
        if blend is None and not args.no_blend:
            blend = insertion_blend_words(insertion.token, insertion.class_noun)
    if args.no_blend:
        blend = None
    params = {
        "source_prompt": source["source_prompt"],
        "target_prompt": target,
        "negative_prompt": args.negative_prompt,
        "image": str(Path(image).expanduser().resolve()) if image else "",
        "seed": source["seed"],
        "width": source["width"],
        "height": source["height"],
        "invert": args.invert,
        "steps": args.steps,
        "guidance": args.guidance,
        "mode": args.mode,
        "cross_steps": parse_schedule(args.cross_steps, "--cross-steps") if args.cross_steps else defaults["cross_steps"],
        "self_steps": parse_schedule(args.self_steps, "--self-steps") if args.self_steps else defaults["self_steps"],
        "shared_steps": args.shared_steps if args.shared_steps is not None else defaults["shared_steps"],
        "word_cross_steps": parse_word_steps(args.word_steps) or None,
        "reweight": parse_reweights(args.reweight) or None,
        "blend_words": blend,
        "blend_threshold": args.blend_threshold if args.blend_threshold is not None else defaults["blend_threshold"],
        "heatmaps": not args.no_heatmaps,
        "adapter": adapter,
        "out_dir": str(args.out.expanduser().resolve()),
        "name": source.get("name") or time.strftime("edit-%Y%m%d-%H%M%S"),
    }
    try:  # the engine's own validation, before a model is loaded
        return protocol.validate_job("edit", params)
    except protocol.ProtocolError as exc:
        raise UsageError(exc.message) from None


@dataclass(frozen=True)
class Insertion:
    """What "put the subject in" needs to write the target prompt."""

    subject_id: int
    name: str
    token: str  # the run's own word (the subject's token may have been renamed since)
    class_noun: str
    into: str


def subject_adapter(library, args) -> tuple[dict | None, Insertion | None]:
    """The run's export folder as the job's adapter, checked before the engine starts."""
    from s2s_desktop.library import runs as library_runs
    from s2s_desktop.library.catalog import LibraryError

    if args.run is None and args.subject is None:
        if args.into or args.batch:
            raise UsageError("--into and --batch put a subject in: give --subject NAME and --run RUN_ID")
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
    summary_path = run.exports_dir / "run_config.json"
    if not summary_path.exists():
        raise UsageError(f"run {run.id} has not finished (no exports yet): `s2s train {subject.name} --resume {run.id}`")
    try:
        token = json.loads(summary_path.read_text(encoding="utf-8")).get("token") or subject.token
    except (OSError, ValueError):
        token = subject.token
    scale = args.lora_scale if args.lora_scale is not None else INSERTION_DEFAULTS["lora_scale"]
    insertion = Insertion(subject.id, subject.name, token, subject.class_noun, args.into or subject.class_noun)
    return {"folder": str(run.exports_dir), "scale": scale}, insertion


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def batch_sources(args) -> list[dict]:
    """One source per picture of ``--batch``: a PNG the app made regenerates from its own prompt
    and seed (exact, nothing inverted); any other picture is inverted with ``--source``."""
    from s2s_desktop.image_meta import generated_size, generated_source, parse_parameters, read_parameters

    folder = args.batch.expanduser()
    if not folder.is_dir():
        raise UsageError(f"--batch {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--batch {folder}: no PNG, JPEG or WebP pictures in it")
    sources = []
    for index, path in enumerate(files):
        parsed = parse_parameters(read_parameters(path)) if path.suffix.lower() == ".png" else {}
        exact, _why = generated_source(parsed, None) if parsed else (False, "")
        name = f"{index:03d}-{path.stem}"[:80]
        if exact:
            size = generated_size(parsed) or (None, None)
            sources.append({"source_prompt": parsed["prompt"].strip(), "image": None, "seed": int(parsed["Seed"]),
                            "width": size[0], "height": size[1], "name": name, "file": str(path)})
        elif args.source:
            sources.append({"source_prompt": args.source, "image": path, "seed": args.seed, "width": args.width,
                            "height": args.height, "name": name, "file": str(path)})
        else:
            raise UsageError(f"{path.name} carries no prompt and seed of this app: give --source, the prompt "
                             "that describes the pictures")
    return sources


def write_grid(pairs: list[tuple[str, str]], path: Path, cell: int = 256) -> Path:
    """Originals left, edits right, one row per picture (temp-then-rename)."""
    import os

    from PIL import Image

    grid = Image.new("RGB", (2 * cell, cell * len(pairs)), (24, 24, 24))
    for row, files in enumerate(pairs):
        for col, file in enumerate(files):
            with Image.open(file) as image:
                image = image.convert("RGB")
                image.thumbnail((cell, cell))
                grid.paste(image, (col * cell + (cell - image.width) // 2, row * cell + (cell - image.height) // 2))
    tmp = path.with_name(f".{path.name}.tmp")
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def run(args) -> int:
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.library.catalog import Library
    from s2s_desktop.library.edits import record_edit

    if args.batch is not None and args.image is not None:
        raise UsageError("give either --image (one picture) or --batch (a folder), not both")
    library = Library()
    results, pairs, interrupted = [], [], False
    try:
        adapter, insertion = subject_adapter(library, args)
        sources = batch_sources(args) if args.batch is not None else [None]
        jobs = [build_params(args, adapter, insertion, source) for source in sources]  # all checked first
        entry, settings = resolve_model(args.model, args.allow_pickle, demo=args.demo)
        with Session() as session:
            info = session.load(entry.load_params(args.device or settings.device))
            print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
            for number, params in enumerate(jobs, 1):
                label = f"edit {number}/{len(jobs)}" if len(jobs) > 1 else "edit"
                try:
                    record = session.run_job("edit", params, label)
                except KeyboardInterrupt:
                    interrupted = True
                    break
                if record.state != "finished":
                    print(f"s2s: {label} {record.state}: {error_text(record.error)}", file=sys.stderr)
                    if len(jobs) == 1:
                        code = (record.error or {}).get("code")
                        return EXIT_USAGE if code in INPUT_ERRORS or code == "bad_image" else EXIT_FAILED
                    continue
                result = record.result or {}
                record_edit(library, params, result, insertion.subject_id if insertion else None)
                results.append(result)
                pairs.append((result["original"], result["edited"]))
                if args.batch is not None:  # the grid so far: an interrupted batch keeps it
                    write_grid(pairs, args.out.expanduser() / "insertion-grid.png")
    finally:
        library.close()
    for note in sorted({note for result in results for note in result.get("notes", [])}):
        print(f"note: {note}", file=sys.stderr)
    if args.batch is not None:
        grid = args.out.expanduser() / "insertion-grid.png"
        status = "interrupted: " if interrupted else ""
        print(f"{status}{len(results)} of {len(jobs)} pictures edited" + (f"; grid {grid}" if results else ""),
              file=sys.stderr)
    if args.json:
        print(json.dumps(results if args.batch is not None else results[0], indent=2))
    else:
        for result in results:
            print(result["edited"])
    if interrupted:
        return 130
    return EXIT_OK if len(results) == len(jobs) else EXIT_FAILED
