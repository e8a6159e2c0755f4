"""``s2s subjects add|add-demo|list|remove``: the subject library from the terminal.

``add`` prints one line per file and exits 0 when at least one photo was imported, 2 when none was.
"""

from __future__ import annotations

import json
import sys

from s2s_desktop.cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Session, UsageError, error_text

STATUS_MARK = {"imported": "added", "duplicate": "duplicate", "refused": "refused"}


def add_parser(sub) -> None:
    subjects = sub.add_parser("subjects", help="the subject library: add, add-demo, list, remove")
    subjects_sub = subjects.add_subparsers(dest="subjects_command", required=True)
    add = subjects_sub.add_parser("add", help="create a subject (or add to one) from photos or folders")
    add.add_argument("name", help="the subject's name, e.g. Biscuit")
    add.add_argument("images", nargs="+", help="image files and/or folders of images")
    add.add_argument("--class", dest="class_noun", help="what it is, e.g. dog (required for a new subject)")
    add.add_argument("--token", help="identifier token (default: a rare token such as <sks-dog>)")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    demo = subjects_sub.add_parser("add-demo", help="add the toy-world subjects (Dotty, Stripe, Smiley)")
    demo.add_argument("--count", type=int, default=8, help="photos per subject (default 8)")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    listing = subjects_sub.add_parser("list", help="list subjects")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    remove = subjects_sub.add_parser("remove", help="delete a subject and its imported photos")
    remove.add_argument("name")


def run(args) -> int:
    from s2s_desktop.library import Library, LibraryError
    from s2s_desktop.library.schema import NewerCatalogError

    try:
        library = Library()
        library.clean_orphans()
        command = args.subjects_command
        if command == "list":
            return list_subjects(library, args)
        if command == "remove":
            subject = library.remove_subject(library.subject(args.name).id)
            print(f"removed {subject.name} ({subject.image_count} photos); the files you imported it from were not touched")
            return EXIT_OK
        if command == "add-demo":
            return add_demo(library, args)
        return add_subject(library, args)
    except (LibraryError, NewerCatalogError) as exc:
        raise UsageError(str(exc)) from None


def _vocabulary():
    from s2s_desktop.library.tokens import read_vocabulary
    from s2s_desktop.settings import Settings

    active = Settings.load().active
    return read_vocabulary(active.source) if active else None


def list_subjects(library, args) -> int:
    subjects = library.subjects()
    if args.json:
        rows = []
        for s in subjects:
            activity = library.activity(s.id)
            rows.append(
                {
                    "name": s.name,
                    "class": s.class_noun,
                    "token": s.token,
                    "images": s.image_count,
                    "folder": str(library.subject_folder(s)),
                    "runs": len(activity["runs"]),
                    "generations": len(activity["generations"]),
                    "edits": len(activity["edits"]),
                }
            )
        print(json.dumps({"library": str(library.home), "subjects": rows}, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not subjects:
        print("no subjects yet; add one with: s2s subjects add NAME --class NOUN PHOTO…", file=sys.stderr)
        return EXIT_OK
    width = max(len(s.name) for s in subjects)
    for s in subjects:
        print(f"{s.name:<{width}}  {s.class_noun:<12} {s.token:<20} {s.image_count:>3} photos")
    return EXIT_OK


def _print_report(report, as_json: bool) -> None:
    if as_json:
        return
    for result in report.results:
        detail = result.reason + (f" (warning: {result.warning})" if result.warning else "")
        print(f"{STATUS_MARK[result.status]:<9} {result.path}" + (f": {detail}" if detail else ""))
    for warning in report.warnings:
        print(f"warning: {report.subject}: {warning}", file=sys.stderr)
    print(
        f"{report.subject}: {len(report.imported)} added, {len(report.not_imported)} not added",
        file=sys.stderr,
    )


def add_subject(library, args) -> int:
    from s2s_desktop.library import import_files
    from s2s_desktop.settings import Settings

    subject = library.find_subject(args.name)
    created = False
    if subject is None:
        if not args.class_noun:
            raise UsageError(f"{args.name!r} is a new subject: say what it is with --class (e.g. --class dog)")
        subject = library.create_subject(args.name, args.class_noun, args.token, _vocabulary())
        created = True
    elif args.class_noun and args.class_noun.strip().lower() != subject.class_noun:
        raise UsageError(f"{subject.name} is a {subject.class_noun}, not a {args.class_noun}")
    elif args.token and args.token.strip().lower() != subject.token:
        subject = library.set_token(subject.id, args.token, _vocabulary())
    report = import_files(library, subject, args.images, Settings.load().library.limits())
    if created and not report.imported:  # nothing to keep: do not leave an empty subject behind
        library.remove_subject(subject.id)
        print(f"{subject.name} was not created: none of the files could be added", file=sys.stderr)
    elif created:
        print(f"created {subject.name} ({subject.class_noun}, token {subject.token})", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(report.to_json(), token=subject.token, created=created), indent=2, ensure_ascii=False))
    _print_report(report, args.json)
    return EXIT_OK if report.imported else EXIT_USAGE


def add_demo(library, args) -> int:
    from s2s_desktop.library.demo_subjects import demo_render_dir, import_demo_subjects, remove_renders
    from s2s_desktop.settings import Settings

    render_dir = demo_render_dir(library.home)
    with Session() as session:
        record = session.run_job("demo_subjects", {"out_dir": str(render_dir), "count": args.count}, "rendering")
    if record.state != "finished":
        print(f"s2s: rendering the demo subjects {record.state}: {error_text(record.error)}", file=sys.stderr)
        return EXIT_FAILED
    reports = import_demo_subjects(library, record.result, Settings.load().library.limits(), _vocabulary())
    remove_renders(library.home)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2, ensure_ascii=False))
        return EXIT_OK
    for report in reports:
        subject = library.subject(report.subject)
        print(
            f"{subject.name}: a {subject.class_noun}, token {subject.token}, {len(report.imported)} photos added "
            f"({subject.image_count} in all)"
        )
    return EXIT_OK
