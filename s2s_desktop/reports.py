"""Exports of a gallery and its evaluation: one grid PNG, the table as CSV and Markdown, and a
self-contained HTML report with both (images inlined, so the file can be mailed or archived alone).

Qt-free (Pillow and the standard library): the CLI and the GUI write the same files.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import textwrap
from pathlib import Path

from engine.protocol.gallery import MANIFEST_NAME
from s2s_desktop.settings import atomic_write, atomic_write_text

PROMPT_COLUMN_PX = 260
HEADER_PX = 44
PAD = 6


# ------------------------------------------------------------------------------------ the grid
def grid_rows(manifest: dict) -> list[tuple[int, str]]:
    """(row index, prompt shown) in grid order: the prompt rows, then the class-prompt row if any."""
    rows = []
    for row in sorted({c["row"] for c in manifest.get("images", [])}, key=lambda r: (r < 0, r)):
        cell = next(c for c in manifest["images"] if c["row"] == row)
        rows.append((row, cell["prompt"]))
    return rows


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def grid_image(folder: Path, cell: int = 128):
    """Rows = prompts, columns = runs, the seeds side by side in each cell."""
    from PIL import Image, ImageDraw

    from s2s_desktop.library.galleries import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    columns = manifest["columns"]
    seeds = manifest["seeds"]
    rows = grid_rows(manifest)
    by_cell = {(c["column"], c["row"], c["seed"]): c["file"] for c in manifest["images"]}
    block = len(seeds) * cell + (len(seeds) - 1) * 2
    width = PROMPT_COLUMN_PX + len(columns) * (block + PAD) + PAD
    height = HEADER_PX + max(len(rows), 1) * (cell + PAD) + PAD
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(14), _font(12)
    for ci, column in enumerate(columns):
        x = PROMPT_COLUMN_PX + PAD + ci * (block + PAD)
        label = textwrap.shorten(column.get("label") or column["key"], width=max(12, block // 7), placeholder="…")
        draw.text((x, 8), label, fill=(20, 20, 20), font=font)
        draw.text((x, 26), "seeds " + ", ".join(map(str, seeds)), fill=(110, 110, 110), font=small)
    for ri, (row, prompt) in enumerate(rows):
        y = HEADER_PX + ri * (cell + PAD)
        lines = textwrap.wrap(("class: " if row < 0 else "") + prompt, width=34)[: max(1, cell // 16)]
        draw.multiline_text((PAD, y + 4), "\n".join(lines), fill=(30, 30, 30), font=small, spacing=3)
        for ci, column in enumerate(columns):
            for si, seed in enumerate(seeds):
                x = PROMPT_COLUMN_PX + PAD + ci * (block + PAD) + si * (cell + 2)
                file = by_cell.get((column["key"], row, seed))
                if file is None:  # cancelled before this cell: leave the gap visible
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(200, 200, 200))
                    continue
                with Image.open(folder / file) as im:
                    canvas.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
    return canvas


def grid_png(folder: Path, out_path: Path, cell: int = 128) -> Path:
    image = grid_image(folder, cell)
    out_path = Path(out_path)
    atomic_write(out_path, lambda fh: image.save(fh, format="PNG"))
    return out_path


# ------------------------------------------------------------------------------------ the table
def format_score(score: dict | None) -> str:
    if not score:
        return ""
    if score.get("value") is None:
        return "n/a"
    value = score["value"]
    text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    if "std" in score:
        text += f" ± {score['std']:.2f}"
    return text + (" *" if score.get("warning") else "")


def _metric_names(evaluation: dict) -> list[dict]:
    return list(evaluation.get("metrics", []))


def evaluation_csv(evaluation: dict, path: Path) -> Path:
    """One line per column: label, then value and n per metric (empty value = not available)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    metrics = _metric_names(evaluation)
    header = ["column", "label"]
    for m in metrics:
        header += [m["name"], f"{m['name']}_n"]
    header.append("recommended")
    writer.writerow(header)
    best = (evaluation.get("best") or {}).get("column")
    for row in evaluation.get("rows", []):
        line = [row["column"], row.get("label", "")]
        for m in metrics:
            score = row["scores"].get(m["name"], {})
            line += ["" if score.get("value") is None else score["value"], score.get("n", "")]
        line.append("yes" if row["column"] == best else "")
        writer.writerow(line)
    atomic_write_text(Path(path), buffer.getvalue())
    return Path(path)


def _notes(evaluation: dict) -> list[str]:
    """Why a metric is missing, and which numbers rest on too few images (one line each)."""
    notes = []
    for m in _metric_names(evaluation):
        reasons = {row["scores"].get(m["name"], {}).get("unavailable") for row in evaluation.get("rows", [])} - {None}
        warnings = {row["scores"].get(m["name"], {}).get("warning") for row in evaluation.get("rows", [])} - {None}
        for reason in sorted(reasons):
            notes.append(f"{m['title']} not available: {reason}")
        for warning in sorted(warnings):
            notes.append(f"{m['title']} *: {warning}")
    return notes


def evaluation_markdown(evaluation: dict) -> str:
    metrics = _metric_names(evaluation)
    best = (evaluation.get("best") or {}).get("column")
    arrows = {True: "↑", False: "↓"}
    lines = ["| Run | " + " | ".join(f"{m['title']} {arrows[m['higher_is_better']]}" for m in metrics) + " | n |",
             "|---|" + "---:|" * len(metrics) + "---:|"]
    for row in evaluation.get("rows", []):
        label = row.get("label") or row["column"]
        if row["column"] == best:
            label = f"**{label}** (recommended)"
        counts = {s.get("n") for s in row["scores"].values() if s.get("n") is not None}
        n = "/".join(str(c) for c in sorted(counts))
        lines.append(f"| {label} | " + " | ".join(format_score(row["scores"].get(m["name"])) for m in metrics)
                     + f" | {n} |")
    footer = []
    models = [f"{m['title']}: {m['model']}" for m in metrics if m.get("model")]
    if models:
        footer.append("Feature models — " + "; ".join(models) + ".")
    if evaluation.get("best"):
        footer.append(f"Recommended: {evaluation['best']['label']} — {evaluation['best']['reason']}.")
    footer += [f"- {note}" for note in _notes(evaluation)]
    return "\n".join(lines) + ("\n\n" + "\n".join(footer) if footer else "") + "\n"


# ------------------------------------------------------------------------------------ HTML
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; }
td:first-child, th:first-child { text-align: left; }
tr.best td { background: #e8f5e9; font-weight: 600; }
td.na { color: #999; }
.grid td { border: none; padding: 2px; vertical-align: top; text-align: left; }
.grid img { width: 96px; height: 96px; image-rendering: auto; }
.prompt { max-width: 220px; font-size: 13px; }
.notes li { font-size: 13px; color: #555; }
"""

# Sort on header click; plain DOM, no library (the report must open from a mail attachment, offline).
_SORT_SCRIPT = """
document.querySelectorAll('table.scores th').forEach(function (th, index) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var up = th.dataset.dir !== 'up';
    th.dataset.dir = up ? 'up' : 'down';
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.v, y = b.cells[index].dataset.v;
      var fx = parseFloat(x), fy = parseFloat(y);
      if (!isNaN(fx) && !isNaN(fy)) { return up ? fx - fy : fy - fx; }
      return up ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _data_uri(path: Path, size: int = 192) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buffer = io.BytesIO()
        im.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def html_report(folder: Path, evaluation: dict | None, out_path: Path, title: str = "") -> Path:
    from s2s_desktop.library.galleries import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    esc = html.escape
    settings = manifest.get("settings", {})
    title = title or f"Subject2Subject report — {manifest.get('token') or 'base model'} ({settings.get('model', '')})"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{len(manifest['columns'])} column(s) × {len(manifest['prompts'])} prompt(s) × "
             f"{len(manifest['seeds'])} seed(s) ({', '.join(map(str, manifest['seeds']))}); "
             f"{settings.get('steps')} steps, guidance {settings.get('guidance')}, "
             f"{settings.get('width')}×{settings.get('height')} px, {esc(str(settings.get('scheduler')))}"
             + ("" if manifest.get("complete", True) else "; <b>cancelled before it finished</b>") + ".</p>"]
    if evaluation:
        parts.append("<h2>Scores</h2>")
        parts.append(_html_table(evaluation))
        notes = _notes(evaluation)
        if evaluation.get("best"):
            notes.insert(0, f"Recommended: {evaluation['best']['label']} — {evaluation['best']['reason']}.")
        notes += [f"{m['title']}: {m['note']}" + (f" (model: {m['model']})" if m.get("model") else "")
                  for m in _metric_names(evaluation)]
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Gallery</h2>")
    parts.append(_html_grid(folder, manifest))
    parts.append(f"<script>{_SORT_SCRIPT}</script></body></html>\n")
    atomic_write_text(Path(out_path), "".join(parts))
    return Path(out_path)


def _html_table(evaluation: dict) -> str:
    esc = html.escape
    metrics = _metric_names(evaluation)
    best = (evaluation.get("best") or {}).get("column")
    head = "".join(f"<th title='{esc(m['note'])}'>{esc(m['title'])} {'↑' if m['higher_is_better'] else '↓'}</th>"
                   for m in metrics)
    body = []
    for row in evaluation.get("rows", []):
        cells = [f"<td data-v='{esc(row.get('label') or row['column'])}'>{esc(row.get('label') or row['column'])}</td>"]
        for m in metrics:
            score = row["scores"].get(m["name"], {})
            if score.get("value") is None:
                cells.append(f"<td class='na' data-v='' title='{esc(score.get('unavailable', ''))}'>n/a</td>")
            else:
                tip = f"n = {score.get('n')}" + (f"; {score['warning']}" if score.get("warning") else "")
                cells.append(f"<td data-v='{score['value']}' title='{esc(tip)}'>{esc(format_score(score))}</td>")
        cls = " class='best'" if row["column"] == best else ""
        body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return (f"<table class='scores'><thead><tr><th>Run</th>{head}</tr></thead><tbody>" + "".join(body)
            + "</tbody></table>")


def _html_grid(folder: Path, manifest: dict) -> str:
    esc = html.escape
    by_cell = {(c["column"], c["row"], c["seed"]): c["file"] for c in manifest["images"]}
    head = "".join(f"<th>{esc(c.get('label') or c['key'])}</th>" for c in manifest["columns"])
    rows = []
    for row, prompt in grid_rows(manifest):
        cells = [f"<td class='prompt'>{'class: ' if row < 0 else ''}{esc(prompt)}</td>"]
        for column in manifest["columns"]:
            images = []
            for seed in manifest["seeds"]:
                file = by_cell.get((column["key"], row, seed))
                if file and (folder / file).is_file():
                    images.append(f"<img src='{_data_uri(folder / file)}' alt='seed {seed}' title='seed {seed}'>")
            cells.append("<td>" + "".join(images) + "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='grid'><thead><tr><th></th>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"


# ------------------------------------------------------------------------------------ insertion
def insertion_summary(evaluation: dict) -> str:
    settings = evaluation.get("settings") or {}
    sources = evaluation.get("sources") or []
    inverted = sum(1 for s in sources if s.get("image"))
    made = f"{len(sources)} source picture(s)" + (f", {inverted} of them inverted photos" if inverted else "")
    return (f"“{evaluation.get('into', '')}” becomes {evaluation.get('token', '')} in {made}; "
            f"{settings.get('steps')} steps, guidance {settings.get('guidance')}, model {settings.get('model', '')}. "
            f"Edited area: {evaluation.get('area', '')}.")


def insertion_markdown(evaluation: dict) -> str:
    """The insertion evaluation as a Markdown section: what was done, the table (a row per run, the
    sample counts, the "not available" reasons), and the source pictures."""
    lines = [f"## Putting {evaluation.get('token', 'the subject')} in", "", insertion_summary(evaluation)]
    if not evaluation.get("complete", True):
        lines.append("**Cancelled before it finished**: the scores cover the edits that were made.")
    lines += ["", evaluation_markdown(evaluation).rstrip(), "", "Source pictures:"]
    for i, source in enumerate(evaluation.get("sources") or [], 1):
        picture = f"{Path(source['image']).name}, inverted" if source.get("image") else f"seed {source.get('seed', 0)}"
        lines.append(f"{i}. {source['prompt']} ({picture}) → {source.get('target', '')}")
    return "\n".join(lines) + "\n"


def _edit_tip(edit: dict) -> str:
    parts = []
    if edit.get("present") is not None:
        parts.append("subject found" if edit["present"] else "no subject found")
    if edit.get("iou") is not None:
        parts.append(f"IoU {edit['iou']:.2f}")
    if edit.get("psnr_outside") is not None:
        parts.append(f"PSNR outside {edit['psnr_outside']:.1f} dB")
    return ", ".join(parts)


def insertion_html(folder: Path, evaluation: dict, out_path: Path, examples: int = 4, title: str = "") -> Path:
    """One self-contained page: the summary, the sortable table with its notes, and the first
    ``examples`` source pictures beside each run's edit of them (the insertion's own files)."""
    esc = html.escape
    folder = Path(folder)
    title = title or f"Subject2Subject — putting {evaluation.get('token', 'the subject')} in"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p>{esc(insertion_summary(evaluation))}"
             + ("" if evaluation.get("complete", True) else " <b>Cancelled before it finished.</b>") + "</p>",
             "<h2>Scores</h2>", _html_table(evaluation)]
    notes = _notes(evaluation) + [f"{m['title']}: {m['note']}" + (f" (model: {m['model']})" if m.get("model") else "")
                                  for m in _metric_names(evaluation)]
    parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    rows = evaluation.get("rows", [])
    sources = (evaluation.get("sources") or [])[:examples]
    head = "".join(f"<th>{esc(r.get('label') or r['column'])}</th>" for r in rows)
    body = []
    for index, source in enumerate(sources):
        edits = [next((e for e in r.get("edits", []) if e["source"] == index), None) for r in rows]
        original = next((e["original"] for e in edits if e), None)
        cells = [f"<td class='prompt'>{esc(source['prompt'])}</td>"]
        for file, tip in [(original, "source")] + [(e and e["edited"], e and _edit_tip(e)) for e in edits]:
            image = folder / file if file else None
            cells.append(f"<td><img src='{_data_uri(image)}' title='{esc(tip or '')}'></td>" if image and image.is_file()
                         else "<td></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if body:
        parts += ["<h2>Examples</h2>", f"<table class='grid'><thead><tr><th></th><th>source</th>{head}</tr></thead>"
                  f"<tbody>{''.join(body)}</tbody></table>"]
    parts.append(f"<script>{_SORT_SCRIPT}</script></body></html>\n")
    atomic_write_text(Path(out_path), "".join(parts))
    return Path(out_path)


def insertion_export_names(folder: Path) -> dict[str, Path]:
    """Beside a gallery's exports without overwriting them."""
    folder = Path(folder)
    return {"csv": folder / "insertion.csv", "markdown": folder / "insertion.md", "html": folder / "insertion-report.html"}


def export_insertion(folder: Path, evaluation: dict, out_folder: Path) -> dict[str, Path]:
    """All three insertion exports into ``out_folder`` (``folder``: where the job wrote the edits)."""
    names = insertion_export_names(out_folder)
    evaluation_csv(evaluation, names["csv"])
    atomic_write_text(names["markdown"], insertion_markdown(evaluation))
    insertion_html(folder, evaluation, names["html"])
    return names


def default_export_names(folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    return {"grid": folder / "grid.png", "csv": folder / "evaluation.csv", "markdown": folder / "evaluation.md",
            "html": folder / "report.html", "manifest": folder / MANIFEST_NAME}
