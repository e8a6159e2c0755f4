"""Edits in the catalog: recorded in one transaction with their parameters and result, listed
newest first (all, or a subject's), removed with or without their files."""

from __future__ import annotations

import pytest

from s2s_desktop.library import LibraryError
from s2s_desktop.library import edits as library_edits


def job_params(target: str, **extra) -> dict:
    return {"source_prompt": "a red star on a blue background", "target_prompt": target, "seed": 3, "steps": 10,
            "reweight": {"star": 2.0}, "out_dir": "/tmp/out", **extra}


def result_files(folder, name: str) -> dict:
    paths = {}
    for key, suffix in (("original", "-original.png"), ("edited", ".png"), ("heatmaps", "-heatmaps.npz")):
        paths[key] = str(folder / f"{name}{suffix}")
        (folder / f"{name}{suffix}").write_bytes(b"x")
    return {**paths, "mode": "replace", "notes": ["a note"], "reconstruction_psnr": None, "seconds": 1.5,
            "reused_source": False, "target_words": [{"word": "green", "tokens": [2]}]}


def test_an_edit_is_recorded_with_its_params_and_result(library, tmp_path):
    result = result_files(tmp_path, "e1")
    edit = library_edits.record_edit(library, job_params("a green star on a blue background"), result)
    assert edit.file == result["edited"] and edit.source_file == result["original"]
    assert edit.params["reweight"] == {"star": 2.0} and edit.params["seed"] == 3
    assert edit.result["heatmaps"] == result["heatmaps"] and edit.result["notes"] == ["a note"]
    assert "seconds" not in edit.result and "reused_source" not in edit.result  # facts of one run only
    assert edit.target_prompt == "a green star on a blue background" and edit.subject_id is None
    assert library_edits.get_edit(library, edit.id) == edit


def test_an_inverted_photo_is_the_source_file_and_an_empty_target_means_the_source(library, tmp_path):
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(b"x")
    edit = library_edits.record_edit(library, job_params("", image=str(photo), invert="npi"),
                                     result_files(tmp_path, "e2"))
    assert edit.source_file == str(photo)
    assert edit.target_prompt == edit.source_prompt == "a red star on a blue background"
    assert photo not in edit.files()


def test_edits_are_listed_newest_first_all_or_by_subject(library, tmp_path):
    dotty = library.create_subject("Dotty", "star")
    first = library_edits.record_edit(library, job_params("a green star"), result_files(tmp_path, "a"))
    second = library_edits.record_edit(library, job_params("a blue star"), result_files(tmp_path, "b"), dotty.id)
    third = library_edits.record_edit(library, job_params("a red heart"), result_files(tmp_path, "c"))
    assert [e.id for e in library_edits.list_edits(library)] == [third.id, second.id, first.id]
    assert [e.id for e in library_edits.list_edits(library, subject_id=dotty.id)] == [second.id]
    assert [e.id for e in library_edits.list_edits(library, limit=2)] == [third.id, second.id]
    assert library.activity(dotty.id)["edits"][0]["id"] == second.id  # the subject's page finds it too


def test_a_removed_subject_leaves_the_edit_unattached_when_recording(library, tmp_path):
    edit = library_edits.record_edit(library, job_params("x"), result_files(tmp_path, "d"), subject_id=999)
    assert edit.subject_id is None


def test_deleting_an_edit_keeps_files_another_edit_uses(library, tmp_path):
    first = library_edits.record_edit(library, job_params("a green star"), result_files(tmp_path, "first"))
    rerender = dict(result_files(tmp_path, "second"), original=first.result["original"])  # the cached source
    second = library_edits.record_edit(library, job_params("a green star", reweight={"green": 3.0}), rerender)
    kept = library_edits.record_edit(library, job_params("a blue star"), result_files(tmp_path, "kept"))

    library_edits.delete_edit(library, first.id, delete_files=True)
    assert not (tmp_path / "first.png").exists() and not (tmp_path / "first-heatmaps.npz").exists()
    assert (tmp_path / "first-original.png").exists()  # the re-render still shows it

    library_edits.delete_edit(library, second.id, delete_files=True)
    assert not (tmp_path / "first-original.png").exists() and not (tmp_path / "second.png").exists()
    assert [e.id for e in library_edits.list_edits(library)] == [kept.id]
    assert all(path.exists() for path in kept.files())
    with pytest.raises(LibraryError, match="no edit"):
        library_edits.get_edit(library, second.id)

    library_edits.delete_edit(library, kept.id)  # the row only: the files stay
    assert all(path.exists() for path in kept.files())


def test_an_edit_without_an_edited_image_is_refused(library):
    with pytest.raises(LibraryError, match="without an edited image"):
        library_edits.record_edit(library, job_params("x"), {"edited": ""})
    assert library_edits.list_edits(library) == []


def test_a_failed_record_leaves_no_row(library, tmp_path, monkeypatch):
    def broken_dumps(*_args, **_kwargs):
        raise ValueError("disk on fire")

    monkeypatch.setattr(library_edits.json, "dumps", broken_dumps)
    with pytest.raises(ValueError):
        library_edits.record_edit(library, job_params("x"), result_files(tmp_path, "f"))
    monkeypatch.undo()
    assert library_edits.list_edits(library) == []
