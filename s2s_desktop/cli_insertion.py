"""``s2s evaluate --insertion``: how well each run puts the subject into pictures, as a table.

    s2s evaluate --insertion --subject Rex --run 3 --run 5 --seeds 0-3 [--prompt "a dog on a sofa"]
    s2s evaluate --insertion --subject Rex --run 3 --images photos/ --prompt "a dog on a sofa" --export DIR
    s2s evaluate --insertion --demo --subject Dotty --run 1 --into red --json

Every run × source picture goes through the same insertion edit as ``s2s edit --subject``; the
engine job (``evaluate_insertion``) scores each run: subject rate and layout IoU (toy world), PIE-Bench's
structure distance (a DINO model), PSNR and LPIPS outside the edited area, CLIP-I to the photos. The
sources are prompts × seeds (default: a few scenes of the class noun; on the toy world a red object
on four backgrounds) or ``--images DIR`` (each picture inverted). Ctrl-C cancels and prints the
scores of the edits made so far.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.protocol.gallery import fill_template
from engine.protocol.insertion import INSERTION_METRICS, INSERTION_NAME
from s2s_desktop.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    INPUT_ERRORS,
    Session,
    UsageError,
    error_text,
)

EXIT_INTERRUPTED = 130


def _metrics(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in INSERTION_METRICS]
    if unknown:
        raise UsageError(f"unknown insertion metric(s) {', '.join(unknown)}; known: {', '.join(INSERTION_METRICS)}")
    return names


def _scale(items: list[str]) -> float | None:
    """One strength for every run (--lora-scale S); None: the measured insertion default."""
    if not items:
        return None
    if len(items) > 1 or "=" in items[0]:
        raise UsageError("with --insertion, --lora-scale takes one SCALE for every run")
    try:
        return float(items[0])
    except ValueError:
        raise UsageError(f"--lora-scale takes a number, e.g. 1.5; got {items[0]!r}") from None


def _sources(args, subject, model_source: str) -> list[dict]:
    from s2s_desktop import insertion_eval
    from s2s_desktop.library import galleries
    from s2s_desktop.library.catalog import LibraryError

    prompts = [fill_template(p, "", subject.class_noun) for p in getattr(args, "prompt", []) if p.strip()]
    if getattr(args, "prompts", None):
        try:
            prompts += [fill_template(p, "", subject.class_noun) for p in galleries.read_prompt_list(args.prompts)]
        except OSError as exc:
            raise UsageError(f"cannot read {args.prompts}: {exc.strerror}") from None
    if args.images is not None:
        if args.seeds:
            raise UsageError("give either --images (pictures to edit) or --seeds (pictures generated), not both")
        return insertion_eval.folder_sources(args.images, prompts[0] if prompts else "")
    try:
        seeds = galleries.parse_seeds(args.seeds or "0-3")
    except LibraryError as exc:
        raise UsageError(str(exc)) from None
    return insertion_eval.seed_sources(prompts or insertion_eval.default_prompts(subject, model_source), seeds)


def _read_partial(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / INSERTION_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def evaluate_insertion(args) -> int:
    from s2s_desktop import insertion_eval, reports
    from s2s_desktop.cli import resolve_model
    from s2s_desktop.cli_gallery import feature_sources
    from s2s_desktop.library import galleries
    from s2s_desktop.library.catalog import Library, LibraryError

    if not args.subject:
        raise UsageError("--insertion needs --subject NAME and --run RUN_ID (repeat --run to compare runs)")
    if args.gallery or args.checkpoints:
        raise UsageError("--gallery and --checkpoints belong to the gallery evaluation, not --insertion")
    library = Library()
    interrupted = False
    try:
        try:
            subject = library.subject(args.subject)
        except LibraryError as exc:
            raise UsageError(str(exc)) from None
        metrics = _metrics(args.metrics)
        entry, settings = resolve_model(args.model, False, demo=args.demo)
        try:
            columns = insertion_eval.run_columns(library, subject, args.run, _scale(args.lora_scale))
            sources = _sources(args, subject, entry.source)
            out_dir = (args.out.expanduser().resolve() if args.out else insertion_eval.new_folder(library, subject))
            if (out_dir / INSERTION_NAME).exists():
                raise UsageError(f"{out_dir} already holds an insertion evaluation; choose a new --out folder")
            params = insertion_eval.job_params(
                subject=subject, columns=columns, sources=sources, out_dir=out_dir, into=args.into or "",
                real_images=[str(r.path) for r in library.images(subject.id)], metrics=metrics,
                feature_models=feature_sources(args, settings, entry.source),
                toy_subject=galleries.toy_subject_for(subject, entry.source), steps=args.steps, guidance=args.guidance)
        except insertion_eval.InsertionSetupError as exc:
            raise UsageError(str(exc)) from None
        print(f"{len(columns)} run(s) × {len(sources)} source picture(s) → {out_dir}", file=sys.stderr)
        with Session() as session:
            info = session.load(entry.load_params(args.device or settings.device))
            print(f"model {info['name']} on {info['device']} ({info['dtype']})", file=sys.stderr)
            try:
                record = session.run_job("evaluate_insertion", params, "insertion")
            except KeyboardInterrupt:
                interrupted, record = True, None
    finally:
        library.close()
    if record is not None and record.state == "finished":
        evaluation = record.result
    else:
        evaluation = _read_partial(out_dir) if interrupted or record.state == "cancelled" else None
        if evaluation is None:
            print(f"s2s: insertion evaluation {record.state if record else 'interrupted'}: "
                  f"{error_text(record.error if record else None)}", file=sys.stderr)
            code = ((record.error if record else None) or {}).get("code")
            return EXIT_USAGE if code in INPUT_ERRORS or code in ("bad_image", "bad_adapter") else EXIT_FAILED
        print("s2s: cancelled: the scores cover the edits made so far", file=sys.stderr)
    if args.export:
        written = reports.export_insertion(out_dir, evaluation, args.export.expanduser().resolve())
        print(f"exported {', '.join(p.name for p in written.values())} to {args.export}", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(evaluation, folder=str(out_dir)), indent=2))
    else:
        print(reports.insertion_markdown(evaluation))
    return EXIT_OK if evaluation.get("complete", True) and not interrupted else EXIT_INTERRUPTED
