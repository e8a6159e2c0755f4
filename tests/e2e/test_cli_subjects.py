"""``s2s subjects`` as a user runs it: per-file results, exit 0 when something was added, 2 when not."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.e2e.test_cli import s2s


def _mixed_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(4):
        small = np.random.default_rng(i).integers(0, 255, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(small).resize((400, 320), Image.Resampling.BICUBIC).save(folder / f"dog{i}.jpg")
    Image.new("RGB", (120, 90)).save(folder / "thumb.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    return folder


def test_add_a_mixed_folder_then_list_and_remove(tmp_path, isolated_home):
    folder = _mixed_folder(tmp_path)
    added = s2s("subjects", "add", "Biscuit", "--class", "dog", folder)
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert len(lines) == 7  # one line per file; hidden files are not photos the user chose
    assert sum(line.startswith("added") for line in lines) == 4
    assert any("empty.jpg: the file is empty" in line for line in lines)
    assert any("readme.txt: not an image" in line for line in lines)
    assert any("thumb.png: too small: 120×90" in line for line in lines)
    assert "token <sks-dog>" in added.stderr and "4 added, 3 not added" in added.stderr

    again = s2s("subjects", "add", "Biscuit", folder / "dog0.jpg", folder / "empty.jpg")
    assert again.returncode == 2 and "duplicate" in again.stdout  # nothing new: exit 2

    nothing = s2s("subjects", "add", "Rex", "--class", "dog", folder / "readme.txt")
    assert nothing.returncode == 2 and "Rex was not created" in nothing.stderr
    assert [s["name"] for s in json.loads(s2s("subjects", "list", "--json").stdout)["subjects"]] == ["Biscuit"]

    listing = json.loads(s2s("subjects", "list", "--json").stdout)
    biscuit = listing["subjects"][0]
    assert (biscuit["name"], biscuit["class"], biscuit["token"], biscuit["images"]) == ("Biscuit", "dog", "<sks-dog>", 4)
    assert listing["library"] == str(isolated_home)
    assert "Biscuit" in s2s("subjects", "list").stdout

    removed = s2s("subjects", "remove", "biscuit")
    assert removed.returncode == 0 and "removed Biscuit" in removed.stdout
    assert not (isolated_home / "subjects" / "0001-biscuit").exists()
    missing = s2s("subjects", "remove", "Biscuit")
    assert missing.returncode == 2 and "no subject called" in missing.stderr


def test_new_subject_needs_a_class_and_a_valid_token(tmp_path):
    folder = _mixed_folder(tmp_path)
    no_class = s2s("subjects", "add", "Biscuit", folder)
    assert no_class.returncode == 2 and "--class" in no_class.stderr
    bad_token = s2s("subjects", "add", "Biscuit", "--class", "dog", "--token", "<my dog>", folder)
    assert bad_token.returncode == 2 and "not a valid identifier token" in bad_token.stderr
    known = s2s("subjects", "add", "Biscuit", "--class", "dog", "--token", "star", folder)
    assert known.returncode == 2 and "already a word the model knows" in known.stderr  # the toy vocabulary


def test_add_demo_subjects(isolated_home):
    result = s2s("subjects", "add-demo", "--count", 4)
    assert result.returncode == 0, result.stderr
    listing = json.loads(s2s("subjects", "list", "--json").stdout)["subjects"]
    assert [(s["name"], s["token"], s["images"]) for s in listing] == [
        ("Dotty", "<dotty-star>", 4),
        ("Smiley", "<smiley-square>", 4),
        ("Stripe", "<stripe-heart>", 4),
    ]
    assert not (isolated_home / "cache" / "demo-subjects").exists()  # renders were moved into the library
