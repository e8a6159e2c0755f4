"""Exports of a gallery and its scores: the grid PNG, CSV, Markdown and the self-contained HTML
report (opened in headless Chromium: it must load with no script error and show the table)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest
from PIL import Image

from s2s_desktop import reports

COLUMNS = [{"key": "base", "label": "Base model", "adapter": None}, {"key": "run1", "label": "#1 LoRA", "adapter": None}]


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "gallery"
    images = []
    colours = {"base": (200, 40, 40), "run1": (40, 40, 200)}
    for column in COLUMNS:
        for row in (0, 1, -1):
            for seed in (0, 1):
                file = f"{column['key']}/prior-s{seed}.png" if row < 0 else f"{column['key']}/r{row:02d}-s{seed}.png"
                (folder / column["key"]).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), colours[column["key"]]).save(folder / file)
                prompt = "a photo of a dog" if row < 0 else f"a <sks-dog> dog scene {row}"
                images.append({"column": column["key"], "row": row, "seed": seed, "prompt": prompt,
                               "kind": "prior" if row < 0 else "subject", "file": file})
    manifest = {"version": 1, "complete": True, "token": "<sks-dog>", "class_noun": "dog",
                "prompts": ["a {token} {class} scene 0", "a {token} {class} scene 1"], "seeds": [0, 1],
                "prior_prompt": "a photo of a {class}", "columns": COLUMNS,
                "settings": {"steps": 25, "guidance": 7.5, "width": 64, "height": 64, "scheduler": "ddim",
                             "model": "Toy <world>"}, "images": images}
    (folder / "gallery.json").write_text(json.dumps(manifest))
    return folder


EVALUATION = {
    "metrics": [
        {"name": "dino", "title": "DINO", "higher_is_better": True, "model": "facebook/dino-vits16", "note": "photos"},
        {"name": "fid", "title": "FID", "higher_is_better": False, "model": "", "note": "fid"},
        {"name": "clip_t", "title": "CLIP-T", "higher_is_better": True, "model": "clip", "note": "prompt"},
    ],
    "rows": [
        {"column": "base", "label": "Base model", "scores": {
            "dino": {"value": 0.21, "n": 4}, "fid": {"value": None, "unavailable": "no Inception weights offline"},
            "clip_t": {"value": 28.5, "n": 4}}},
        {"column": "run1", "label": "#1 LoRA", "scores": {
            "dino": {"value": 0.63, "n": 4, "warning": "only 4 images"},
            "fid": {"value": None, "unavailable": "no Inception weights offline"}, "clip_t": {"value": 27.25, "n": 4}}},
    ],
    "best": {"column": "run1", "label": "#1 LoRA", "reason": "best subject fidelity and prompt fidelity together"},
}


def test_grid_has_a_cell_per_seed_column_and_row(gallery, tmp_path):
    path = reports.grid_png(gallery, tmp_path / "grid.png", cell=32)
    image = Image.open(path)
    # 2 columns × 2 seeds of 32 px beside the prompt column; 3 rows (2 prompts + the class prompt)
    assert image.width == reports.PROMPT_COLUMN_PX + 2 * (2 * 32 + 2 + reports.PAD) + reports.PAD
    assert image.height == reports.HEADER_PX + 3 * (32 + reports.PAD) + reports.PAD
    x = reports.PROMPT_COLUMN_PX + reports.PAD + 10
    assert image.getpixel((x, reports.HEADER_PX + 10)) == (200, 40, 40)  # base column, first row
    assert image.getpixel((x + 2 * 32 + 2 + reports.PAD, reports.HEADER_PX + 10)) == (40, 40, 200)


def test_a_cancelled_gallery_leaves_gaps_not_an_error(gallery, tmp_path):
    manifest = json.loads((gallery / "gallery.json").read_text())
    manifest["images"] = manifest["images"][:3]
    manifest["complete"] = False
    (gallery / "gallery.json").write_text(json.dumps(manifest))
    assert reports.grid_png(gallery, tmp_path / "grid.png", cell=32).is_file()
    html = reports.html_report(gallery, None, tmp_path / "r.html").read_text()
    assert "cancelled before it finished" in html


def test_csv_and_markdown_say_what_is_missing_and_what_is_recommended(tmp_path):
    rows = list(csv.DictReader(open(reports.evaluation_csv(EVALUATION, tmp_path / "t.csv"), encoding="utf-8")))
    assert rows[0]["dino"] == "0.21" and rows[0]["dino_n"] == "4" and rows[0]["fid"] == ""
    assert rows[1]["recommended"] == "yes" and rows[0]["recommended"] == ""
    text = reports.evaluation_markdown(EVALUATION)
    assert "| DINO ↑ | FID ↓ | CLIP-T ↑ |" in text
    assert "**#1 LoRA** (recommended)" in text and "0.630 *" in text and "n/a" in text
    assert "FID not available: no Inception weights offline" in text and "DINO *: only 4 images" in text


def test_html_report_is_self_contained(gallery, tmp_path):
    html = reports.html_report(gallery, EVALUATION, tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 12 and "src='gallery" not in html  # every image inlined
    assert "Toy &lt;world&gt;" in html  # text is escaped
    assert "class='best'" in html and "no Inception weights offline" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_html_report_opens_in_headless_chromium_without_errors(gallery, tmp_path):
    path = reports.html_report(gallery, EVALUATION, tmp_path / "report.html")
    # a script that sorts the table by DINO ascending, then reports the order: proves the page's own
    # script ran without error in a real browser
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace(
        "</body>", "<script>document.querySelectorAll('table.scores th')[1].click();"
        "document.title = 'order:' + Array.prototype.map.call(document.querySelectorAll('table.scores tbody tr'),"
        " function (r) { return r.cells[0].textContent; }).join('|');</script></body>"), encoding="utf-8")
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Error" in line or "Uncaught" in line], console
    assert "<title>order:Base model|#1 LoRA</title>" in result.stdout  # 0.21 before 0.63
    assert result.stdout.count("<tr") >= 2 + 3 + 1


# ------------------------------------------------------------------------------------ insertion
def insertion_evaluation(folder) -> dict:
    """An insertion evaluation as the engine writes it: two runs, two sources, one of them cancelled short."""
    edits = {}
    for key, colour in (("run1", (200, 40, 40)), ("run2", (40, 40, 200))):
        (folder / key).mkdir(parents=True, exist_ok=True)
        edits[key] = []
        for i in range(2 if key == "run1" else 1):
            Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / key / f"s0{i}-original.png")
            Image.new("RGB", (64, 64), colour).save(folder / key / f"s0{i}-edited.png")
            edits[key].append({"source": i, "original": f"{key}/s0{i}-original.png", "edited": f"{key}/s0{i}-edited.png",
                               "area": "", "present": i == 0, "iou": 0.5, "psnr_outside": 31.25})

    def score(value, n):
        return {"value": value, "n": n}

    no_dino = {"value": None, "unavailable": "DINO model facebook/dino-vits16 is not downloaded"}
    return {
        "version": 1, "kind": "insertion", "complete": False, "token": "<dotty-star>", "class_noun": "star",
        "into": "red", "area": "the source's and the edit's objects (toy evaluator)",
        "settings": {"steps": 25, "guidance": 7.5, "model": "Toy world (demo)"},
        "sources": [{"prompt": "a red star on a blue background", "target": "a <dotty-star> star on a blue background",
                     "seed": 0},
                    {"prompt": "a red star on a white background", "target": "a <dotty-star> star on a white background",
                     "image": "/photos/white.png"}],
        "metrics": [{"name": "subject_rate", "title": "Subject in (toy)", "higher_is_better": True,
                     "model": "toy evaluator", "note": "share"},
                    {"name": "structure", "title": "Structure dist.", "higher_is_better": False, "model": "",
                     "note": "PIE-Bench"},
                    {"name": "psnr_outside", "title": "PSNR outside", "higher_is_better": True, "model": "", "note": "dB"}],
        "rows": [{"column": "run1", "label": "#1 LoRA", "edits": edits["run1"],
                  "scores": {"subject_rate": score(0.5, 2), "structure": no_dino, "psnr_outside": score(31.25, 2)}},
                 {"column": "run2", "label": "#2 DreamBooth", "edits": edits["run2"],
                  "scores": {"subject_rate": score(1.0, 1), "structure": no_dino,
                             "psnr_outside": {"value": 28.0, "n": 1, "warning": "1 of 2 source pictures left out"}}}],
        "best": None,
    }


def test_insertion_markdown_has_the_table_counts_and_reasons(tmp_path):
    text = reports.insertion_markdown(insertion_evaluation(tmp_path))
    assert text.startswith("## Putting <dotty-star> in\n")
    assert "“red” becomes <dotty-star> in 2 source picture(s), 1 of them inverted photos" in text
    assert "| Run | Subject in (toy) ↑ | Structure dist. ↓ | PSNR outside ↑ | n |" in text
    assert "| #1 LoRA | 0.500 | n/a | 31.2 | 2 |" in text and "| #2 DreamBooth | 1.000 | n/a | 28.0 * | 1 |" in text
    assert "Structure dist. not available: DINO model facebook/dino-vits16 is not downloaded" in text
    assert "PSNR outside *: 1 of 2 source pictures left out" in text and "Cancelled before it finished" in text
    assert "2. a red star on a white background (white.png, inverted) → a <dotty-star> star on a white background" in text


def test_insertion_exports_write_csv_markdown_and_a_self_contained_page(tmp_path):
    folder = tmp_path / "insertion"
    evaluation = insertion_evaluation(folder)
    written = reports.export_insertion(folder, evaluation, tmp_path / "out")
    assert {p.name for p in written.values()} == {"insertion.csv", "insertion.md", "insertion-report.html"}
    rows = list(csv.DictReader(open(written["csv"], encoding="utf-8")))
    assert [r["column"] for r in rows] == ["run1", "run2"] and rows[1]["subject_rate_n"] == "1"
    assert rows[0]["structure"] == "" and rows[0]["psnr_outside"] == "31.25"
    page = written["html"].read_text(encoding="utf-8")
    # the examples: source 1 with both runs' edits (3 pictures), source 2 with run1's only (run2 was cancelled)
    assert page.count("data:image/png;base64,") == 5 and "src='run1" not in page
    assert "&lt;dotty-star&gt;" in page and "subject found, IoU 0.50, PSNR outside 31.2 dB" in page
    assert "not downloaded" in page and "Cancelled before it finished" in page
