"""``s2s generate --subject …`` (a comparison gallery) and ``s2s evaluate`` (its score table).

    s2s generate --subject Rex --run 3 --run 5 --prompts prompts.txt --seeds 0-3 --out DIR
    s2s generate --demo --subject Dotty --run 1 --checkpoints 1 --seeds 0-1 --out DIR
    s2s evaluate --subject Rex --run 3 --run 5 [--gallery ID|DIR] [--export DIR] [--json]
    s2s evaluate --insertion --subject Rex --run 3 [--images DIR | --seeds 0-3] [--into WORD]  (cli_insertion)

Both go through the same engine jobs and the same catalog records as the Generate page's Compare
mode and the Evaluate page. ``evaluate`` without ``--gallery`` first generates one (the default
prompt list and seeds 0-3), so a single command goes from trained runs to a table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine import protocol
from engine.protocol.gallery import FEATURE_MODELS, METRICS
from s2s_desktop.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    INPUT_ERRORS,
    Session,
    UsageError,
    error_text,
)


def add_gallery_arguments(parser) -> None:
    """Options shared by ``generate`` (gallery mode) and ``evaluate``."""
    group = parser.add_argument_group("comparison gallery (with --subject)")
    group.add_argument("--subject", help="a subject from `s2s subjects list`: make a runs × prompts × seeds gallery")
    group.add_argument("--run", type=int, action="append", default=[], metavar="RUN_ID",
                       help="a finished run of the subject as a column (repeat)")
    group.add_argument("--checkpoints", type=int, action="append", default=[], metavar="RUN_ID",
                       help="every saved checkpoint of this run as a column (to pick the best step)")
    group.add_argument("--no-base", action="store_true", help="leave out the base-model column")
    group.add_argument("--lora-scale", action="append", default=[], metavar="[RUN=]SCALE",
                       help="LoRA strength for all runs, or RUN=SCALE for one (repeat)")
    group.add_argument("--seeds", help="seeds shared by every column, e.g. 0-3 or 1,5,9 (default 0-3)")
    group.add_argument("--prompt-list", help="a shipped or saved prompt list: paper-20, dreambooth-objects-25, "
                       "dreambooth-live-25, toy-world (default: toy-world for the demo model, else paper-20)")
    group.add_argument("--prior-prompt", default="a photo of a {class}",
                       help="class prompt drawn per column for PRES ('' to skip)")
    group.add_argument("--batch-size", type=int, default=4, help="images per pipeline call")


def add_evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="score runs of a subject side by side (CLIP-T, CLIP-I, DINO, FID, IS, …)")
    ev.add_argument("--gallery", help="an earlier gallery (its id from the library, or its folder); "
                    "default: generate one first")
    ev.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    for name in FEATURE_MODELS:
        ev.add_argument(f"--{name}", metavar="SOURCE", help=f"{name} feature model: a folder, file or hub id "
                        "(default: settings)")
    ev.add_argument("--export", type=Path, metavar="DIR", help="also write grid.png, evaluation.csv/.md, report.html "
                    "(--insertion: insertion.csv/.md, insertion-report.html)")
    ev.add_argument("--out", type=Path, help="gallery folder when one is generated, or the --insertion results "
                    "folder (default: in the library)")
    ev.add_argument("--prompt", action="append", default=[], help="prompt template (repeat; default: a prompt "
                    "list); with --insertion: a source picture's prompt")
    ev.add_argument("--prompts", type=Path, help="text file with one prompt template per line")
    ev.add_argument("--steps", type=int, default=25)
    ev.add_argument("--guidance", type=float, default=7.5)
    ev.add_argument("--negative-prompt", default="")
    ev.add_argument("--width", type=int)
    ev.add_argument("--height", type=int)
    ev.add_argument("--scheduler", choices=protocol.SCHEDULERS, default="ddim")
    ev.add_argument("--demo", action="store_true", help="use the shipped toy-world model (offline demo)")
    ev.add_argument("--model", help="a model name, folder, file or hub id (default: the active model)")
    ev.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    ev.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    add_gallery_arguments(ev)
    put_in = ev.add_argument_group("putting the subject into pictures (with --insertion)")
    put_in.add_argument("--insertion", action="store_true", help="score how each --run puts the subject into "
                        "source pictures (prompts × --seeds, or --images) instead of a gallery")
    put_in.add_argument("--images", type=Path, metavar="DIR", help="source pictures to put the subject into "
                        "(inverted; --prompt says what they show unless this app made them)")
    put_in.add_argument("--into", metavar="WORD", help="the word of the source prompts the subject takes the place "
                        "of (default: the subject's class noun)")


# ------------------------------------------------------------------------------------ building
def _scales(items: list[str]) -> tuple[float, dict[int, float]]:
    default, per_run = 1.0, {}
    for item in items:
        run, sep, value = item.rpartition("=")
        try:
            scale = float(value)
            if sep:
                per_run[int(run)] = scale
            else:
                default = scale
        except ValueError:
            raise UsageError(f"--lora-scale takes SCALE or RUN=SCALE, e.g. 0.8 or 3=0.6; got {item!r}") from None
    return default, per_run


def build_columns(library, subject, args, model_name: str) -> list[dict]:
    from s2s_desktop.library import galleries
    from s2s_desktop.library import runs as library_runs
    from s2s_desktop.library.catalog import LibraryError

    default_scale, per_run = _scales(args.lora_scale)
    columns = [] if args.no_base else [galleries.base_column(model_name)]
    try:
        for run_id in args.run:
            run = library_runs.get_run(library, run_id)
            if run.subject_id != subject.id:
                raise UsageError(f"run {run_id} belongs to another subject")
            columns.append(galleries.run_column(run, per_run.get(run_id, default_scale)))
        for run_id in args.checkpoints:
            run = library_runs.get_run(library, run_id)
            if run.subject_id != subject.id:
                raise UsageError(f"run {run_id} belongs to another subject")
            found = galleries.checkpoint_columns(run)
            if not found:
                raise UsageError(f"run {run_id} kept no checkpoints")
            columns += [c for c in found if c["key"] not in {k["key"] for k in columns}]
    except LibraryError as exc:
        raise UsageError(str(exc)) from None
    if not columns:
        raise UsageError("nothing to compare: give --run RUN_ID (or drop --no-base)")
    return columns


def read_templates(args, library, model_source: str) -> list[str]:
    from s2s_desktop.library import galleries

    templates = [p for p in getattr(args, "prompt", []) if p.strip()]
    if getattr(args, "prompts", None):
        try:
            templates += galleries.read_prompt_list(args.prompts)
        except OSError as exc:
            raise UsageError(f"cannot read {args.prompts}: {exc.strerror}") from None
    if templates:
        return templates
    lists = galleries.prompt_lists(library.home)
    name = args.prompt_list or galleries.default_prompt_list(model_source)
    if name not in lists:
        raise UsageError(f"no prompt list {name!r}; known: {', '.join(lists)}")
    return galleries.read_prompt_list(lists[name])


def gallery_params(library, subject, args, entry, out_dir: Path) -> dict:
    from s2s_desktop.library import galleries
    from s2s_desktop.library.catalog import LibraryError

    try:
        seeds = galleries.parse_seeds(args.seeds or "0-3")
    except LibraryError as exc:
        raise UsageError(str(exc)) from None
    params = {
        "columns": build_columns(library, subject, args, entry.name),
        "prompts": read_templates(args, library, entry.source),
        "token": subject.token,
        "class_noun": subject.class_noun,
        "seeds": seeds,
        "prior_prompt": args.prior_prompt,
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "guidance": args.guidance,
        "width": args.width,
        "height": args.height,
        "scheduler": args.scheduler,
        "batch": args.batch_size,
        "out_dir": str(out_dir),
    }
    try:
        return protocol.validate_job("gallery", params)
    except protocol.ProtocolError as exc:
        raise UsageError(exc.message) from None


def _run_gallery(session, library, subject, params) -> tuple[object, int]:
    from s2s_desktop.library import galleries

    record = session.run_job("gallery", params, f"gallery {subject.name}")
    made = Path(params["out_dir"]) / "gallery.json"
    gallery = galleries.record_gallery(library, subject.id, params) if made.is_file() else None
    if record.state != "finished":
        print(f"s2s: gallery {record.state}: {error_text(record.error)}", file=sys.stderr)
        code = (record.error or {}).get("code")
        return gallery, EXIT_USAGE if code in INPUT_ERRORS or code == "bad_adapter" else EXIT_FAILED
    return gallery, EXIT_OK


# ------------------------------------------------------------------------------------ commands
def generate_gallery(args) -> int:
    """``s2s generate --subject S …``: one gallery job, recorded under the subject."""
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.library.catalog import Library, LibraryError

    library = Library()
    try:
        try:
            subject = library.subject(args.subject)
        except LibraryError as exc:
            raise UsageError(str(exc)) from None
        args.prompt = list(args.prompt)
        entry, settings = resolve_model(args.model, args.allow_pickle, demo=args.demo)
        out_dir = args.out.expanduser().resolve()
        if (out_dir / "gallery.json").exists():
            raise UsageError(f"{out_dir} already holds a gallery; choose a new --out folder")
        params = gallery_params(library, subject, args, entry, out_dir)
        with Session() as session:
            info = session.load(entry.load_params(args.device or settings.device))
            print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
            gallery, code = _run_gallery(session, library, subject, params)
    finally:
        library.close()
    if args.json:
        print(json.dumps({"gallery": gallery.id if gallery else None, "folder": str(out_dir),
                          "manifest": str(out_dir / "gallery.json")}, indent=2))
    elif gallery is not None:
        print(out_dir / "gallery.json")
        print(f"gallery {gallery.id}: {gallery.title}", file=sys.stderr)
    return code


def feature_sources(args, settings, model_source: str) -> dict[str, str]:
    from s2s_desktop.library import galleries

    sources = galleries.feature_sources_for(settings.feature_models.sources(), model_source)
    for name in FEATURE_MODELS:
        value = getattr(args, name, None)
        if value:
            path = Path(value).expanduser()
            sources[name] = str(path.resolve()) if path.exists() else value
    return sources


def _existing_gallery(library, spec: str):
    from s2s_desktop.library import galleries
    from s2s_desktop.library.catalog import LibraryError

    try:
        if spec.isdigit():
            return galleries.get_gallery(library, int(spec))
        folder = Path(spec).expanduser().resolve()
        folder = folder.parent if folder.name == "gallery.json" else folder
        for gallery in galleries.list_galleries(library):
            if gallery.folder.resolve() == folder:
                return gallery
        raise UsageError(f"{folder} is not a gallery of the library (make one with `s2s generate --subject …`)")
    except LibraryError as exc:
        raise UsageError(str(exc)) from None


def evaluate(args) -> int:
    if args.insertion:
        from s2s_desktop.cli_insertion import evaluate_insertion

        return evaluate_insertion(args)
    if args.images or args.into:
        raise UsageError("--images and --into go with --insertion (putting the subject into pictures)")
    from s2s_desktop import reports
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.library import galleries
    from s2s_desktop.library.catalog import Library, LibraryError
    from s2s_desktop.settings import Settings, outputs_dir

    library = Library()
    try:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        unknown = [m for m in metrics or [] if m not in METRICS]
        if unknown:
            raise UsageError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
        gallery = _existing_gallery(library, args.gallery) if args.gallery else None
        if gallery is None and not args.subject:
            raise UsageError("give --subject NAME (with --run RUN_ID …) or --gallery ID")
        try:
            subject = library.subject(args.subject if args.subject else gallery.subject_id)
        except (LibraryError, TypeError):
            raise UsageError("the gallery belongs to no subject; give --subject NAME") from None
        settings = Settings.load()
        entry = None
        if gallery is None or args.model or args.demo:
            entry, settings = resolve_model(args.model, False, demo=args.demo)
        with Session() as session:
            if gallery is None:
                out_dir = (args.out.expanduser().resolve() if args.out
                           else galleries.new_gallery_folder(library, subject, outputs_dir()))
                params = gallery_params(library, subject, args, entry, out_dir)
                info = session.load(entry.load_params(args.device or settings.device))
                print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
                gallery, code = _run_gallery(session, library, subject, params)
                if code != EXIT_OK:
                    return code
                model_source = entry.source
            else:
                model_source = _gallery_model_source(gallery, entry, Settings.load())
            real = [str(record.path) for record in library.images(subject.id)]
            params = {
                "gallery": str(gallery.folder), "real_images": real, "metrics": metrics,
                "feature_models": feature_sources(args, settings, model_source),
                "toy_subject": galleries.toy_subject_for(subject, model_source),
            }
            record = session.run_job("evaluate", protocol.validate_job("evaluate", params), "evaluate")
        if record.state != "finished":
            print(f"s2s: evaluate {record.state}: {error_text(record.error)}", file=sys.stderr)
            return EXIT_FAILED
        evaluation = record.result
        galleries.record_evaluation(library, gallery.id, evaluation)
        if args.export:
            names = reports.default_export_names(args.export.expanduser().resolve())
            reports.grid_png(gallery.folder, names["grid"])
            reports.evaluation_csv(evaluation, names["csv"])
            from s2s_desktop.settings import atomic_write_text

            atomic_write_text(names["markdown"], reports.evaluation_markdown(evaluation))
            reports.html_report(gallery.folder, evaluation, names["html"])
            print(f"exported {', '.join(p.name for k, p in names.items() if k != 'manifest')} to {args.export}",
                  file=sys.stderr)
    finally:
        library.close()
    if args.json:
        print(json.dumps(dict(evaluation, gallery_id=gallery.id), indent=2))
    else:
        print(reports.evaluation_markdown(evaluation))
    return EXIT_OK


def _gallery_model_source(gallery, entry, settings) -> str:
    """Which model made an earlier gallery (its manifest names it), for the toy-world check."""
    name = gallery.manifest().get("settings", {}).get("model", "")
    if entry is not None and name == entry.name:
        return entry.source
    found = settings.find_model(name) if name else None
    if found is not None:
        return found.source
    from s2s_desktop.demo import DEMO_MODEL_NAME, toy_model_path

    return str(toy_model_path()) if name == DEMO_MODEL_NAME else ""
