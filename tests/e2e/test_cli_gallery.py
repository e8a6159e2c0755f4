"""``s2s generate --subject`` and ``s2s evaluate`` as a user runs them, on the toy-world model."""

from __future__ import annotations

import csv
import json

from PIL import Image

from tests.e2e.test_cli import s2s
from tests.e2e.test_cli_train import _subject


def test_a_gallery_of_the_base_model_and_a_run_then_its_table(tmp_path, isolated_home):
    config = _subject(tmp_path)
    assert s2s("train", "Biscuit", "--method", "lora", "--demo", "--config", config).returncode == 0
    out = tmp_path / "gallery"
    made = s2s("generate", "--demo", "--subject", "Biscuit", "--run", "1", "--lora-scale", "1=0.7", "--prompt",
               "a photo of {token} {class}", "--seeds", "3,5", "--steps", "3", "--prior-prompt", "", "--out", out)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((out / "gallery.json").read_text())
    assert [c["key"] for c in manifest["columns"]] == ["base", "run1"] and len(manifest["images"]) == 4
    text = Image.open(out / "run1" / "r00-s5.png").text["parameters"]
    assert "Seed: 5" in text and "Lora scale: 0.7" in text
    assert (out / "gallery.json").exists() and made.stdout.strip().endswith("gallery.json")

    exported = tmp_path / "report"
    scored = s2s("evaluate", "--gallery", "1", "--metrics", "toy_match,clip_t,fid", "--export", exported, "--json")
    assert scored.returncode == 0, scored.stderr
    table = json.loads(scored.stdout)
    assert [r["column"] for r in table["rows"]] == ["base", "run1"]
    # Biscuit is no toy subject: the toy score says so instead of guessing
    assert "toy-world subject" in table["rows"][0]["scores"]["toy_match"]["unavailable"]
    assert table["rows"][0]["scores"]["clip_t"]["n"] == 2  # the toy CLIP, offline
    assert table["rows"][0]["scores"]["fid"]["value"] is None  # 2 images, or no Inception here: a reason
    assert {p.name for p in exported.iterdir()} == {"grid.png", "evaluation.csv", "evaluation.md", "report.html"}
    rows = list(csv.DictReader(open(exported / "evaluation.csv", encoding="utf-8")))
    assert [r["column"] for r in rows] == ["base", "run1"]


def test_bad_gallery_requests_exit_2_with_the_reason(tmp_path, isolated_home):
    _subject(tmp_path)
    bad_seeds = s2s("generate", "--demo", "--subject", "Biscuit", "--seeds", "3-1", "--out", tmp_path / "g")
    assert bad_seeds.returncode == 2 and "seeds" in bad_seeds.stderr
    no_run = s2s("generate", "--demo", "--subject", "Biscuit", "--run", "7", "--out", tmp_path / "g")
    assert no_run.returncode == 2 and "no training run 7" in no_run.stderr
    no_subject = s2s("generate", "--demo", "--run", "1", "--prompt", "x", "--out", tmp_path / "g")
    assert no_subject.returncode == 2 and "--subject" in no_subject.stderr
    unknown = s2s("evaluate", "--demo", "--subject", "Biscuit", "--metrics", "beauty")
    assert unknown.returncode == 2 and "unknown metric" in unknown.stderr
