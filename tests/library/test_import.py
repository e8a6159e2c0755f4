"""Importing a batch: a corpus of bad files made here, each refused with its reason; the rest imported."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from s2s_desktop.library import ImportLimits, import_files
from s2s_desktop.library.imaging import NEUTRAL_BACKGROUND, load_normalized


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width×height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def bad_corpus(tmp_path, photo):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    good = photo("source.jpg", seed=3, size=(600, 400), quality=90).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "bomb.png").write_bytes(_png_claiming(30_000, 30_000))
    Image.new("1", (9000, 9000)).save(folder / "huge-1bit.png")  # 81 MP, a few KB on disk
    Image.new("RGB", (300, 200), "red").save(folder / "small.png")
    return {
        "empty.jpg": "empty",
        "notes.txt": "not_image",
        "fake.png": "corrupt",
        "truncated.jpg": "corrupt",
        "bomb.png": "too_many_pixels",
        "huge-1bit.png": "too_many_pixels",
        "small.png": "too_small",
    }


def test_bad_files_are_refused_with_reasons_and_good_ones_still_imported(library, bad_corpus, photo, tmp_path):
    subject = library.create_subject("Biscuit", "dog")
    good = [photo(f"good{i}.jpg", seed=10 + i) for i in range(5)]
    report = import_files(library, subject, [tmp_path / "bad", *good])
    refused = {r.path.rsplit("/", 1)[-1]: r for r in report.results if r.status == "refused"}
    assert {name: r.code for name, r in refused.items()} == bad_corpus
    assert all(len(r.reason) > 15 for r in refused.values())  # a sentence a user can act on
    assert "256 px" in refused["small.png"].reason and "300×200" in refused["small.png"].reason
    assert len(report.imported) == 5 and library.subject(subject.id).image_count == 5
    assert library.integrity_problems() == []


def test_the_short_side_limit_is_a_setting(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    small = photo("small.png", size=(200, 150))
    assert import_files(library, subject, [small]).results[0].code == "too_small"
    assert import_files(library, subject, [small], ImportLimits(min_short_side=128)).imported


def test_formats_are_converted_to_rgb_and_originals_kept(library, tmp_path):
    subject = library.create_subject("Biscuit", "dog")
    base = np.zeros((300, 400, 3), np.uint8)
    base[:, :200] = (200, 40, 40)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(base).convert("CMYK").save(cmyk, quality=95)
    rgba = np.dstack([base, np.full((300, 400), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((300, 400), 32768, np.uint16)).save(tmp_path / "grey16.png")
    palette = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.fromarray(base).save(rotated, exif=exif, quality=95)
    original_bytes = rotated.read_bytes()

    report = import_files(library, subject, [cmyk, tmp_path / "alpha.png", tmp_path / "grey16.png", rotated])
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in report.results}
    assert all(r.imported for r in report.results), [r.reason for r in report.results]
    assert "CMYK" in by_name["cmyk.jpg"].reason
    assert "transparency" in by_name["alpha.png"].reason
    assert "16-bit" in by_name["grey16.png"].reason
    assert "EXIF" in by_name["rotated.jpg"].reason
    records = {r.source_name: r for r in library.images(subject.id)}
    assert (records["rotated.jpg"].width, records["rotated.jpg"].height) == (300, 400)
    assert records["rotated.jpg"].path.read_bytes() == original_bytes  # stored as it came
    assert rotated.read_bytes() == original_bytes  # and the user's file untouched
    assert load_normalized(records["alpha.png"].path).getpixel((0, 0)) == NEUTRAL_BACKGROUND
    assert load_normalized(records["grey16.png"].path).getpixel((5, 5)) == (128, 128, 128)  # not clipped white
    palette_report = import_files(library, library.create_subject("P", "dog"), [tmp_path / "palette.png"])
    assert palette_report.imported and load_normalized(library.images(2)[0].path).mode == "RGB"


def test_the_same_pixels_in_another_format_are_a_duplicate(library, photo, tmp_path):
    subject = library.create_subject("Biscuit", "dog")
    png = photo("a.png", seed=1)
    Image.open(png).save(tmp_path / "a.bmp")
    Image.open(png).save(tmp_path / "a.webp", lossless=True)
    Image.open(png).save(tmp_path / "a.jpg", quality=85)
    report = import_files(library, subject, [png, tmp_path / "a.bmp", tmp_path / "a.webp", tmp_path / "a.jpg"])
    statuses = [r.status for r in report.results]
    assert statuses == ["imported", "duplicate", "duplicate", "imported"]
    assert "a.png" in report.results[1].reason
    assert "almost the same as a.png" in report.results[3].warning  # re-encoded: a near-duplicate, warned
    assert library.subject(subject.id).image_count == 2


def test_batch_size_warnings(library, photo):
    few = library.create_subject("Few", "dog")
    report = import_files(library, few, [photo(f"f{i}.png", seed=i) for i in range(3)])
    assert report.warnings and "only 3 photos" in report.warnings[0]
    many = library.create_subject("Many", "dog")
    paths = [photo(f"m{i}.png", seed=100 + i, size=(256, 256)) for i in range(31)]
    assert "31 photos" in import_files(library, many, paths, ImportLimits()).warnings[0]
    ok = library.create_subject("Ok", "dog")
    assert import_files(library, ok, [photo(f"o{i}.png", seed=200 + i) for i in range(5)]).warnings == []


def test_a_stopped_import_keeps_what_it_imported(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    paths = [photo(f"p{i}.png", seed=i) for i in range(6)]
    seen = []
    report = import_files(
        library, subject, paths, on_result=lambda done, total, r: seen.append((done, total)),
        should_stop=lambda: len(seen) >= 2,
    )
    assert report.cancelled and len(report.imported) == 2 and seen == [(1, 6), (2, 6)]
    assert library.subject(subject.id).image_count == 2
