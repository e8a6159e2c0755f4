"""Galleries and evaluations in the catalog: a gallery and its images in one transaction, scores
replaced on re-evaluation, columns from runs and checkpoints, prompt lists and seed ranges."""

from __future__ import annotations

import json

import pytest

from engine.protocol.gallery import TOY_SUBJECT_NAMES, fill_template
from s2s_desktop.library import LibraryError, galleries
from s2s_desktop.library import runs as library_runs


def write_gallery(folder, columns=("base", "run1"), seeds=(0, 1)) -> dict:
    images = []
    for key in columns:
        for row, _template in enumerate(["a {token} {class} in the snow"]):
            for seed in seeds:
                file = f"{key}/r{row:02d}-s{seed}.png"
                (folder / key).mkdir(parents=True, exist_ok=True)
                (folder / file).write_bytes(b"png")
                images.append({"column": key, "row": row, "seed": seed, "prompt": "a <sks-dog> dog in the snow",
                               "kind": "subject", "file": file})
    manifest = {"version": 1, "complete": True, "token": "<sks-dog>", "class_noun": "dog",
                "prompts": ["a {token} {class} in the snow"], "seeds": list(seeds), "prior_prompt": "",
                "columns": [{"key": k, "label": k.upper(), "adapter": None} for k in columns],
                "settings": {"model": "Toy world (demo)"}, "images": images}
    (folder / "gallery.json").write_text(json.dumps(manifest))
    return {"out_dir": str(folder), "columns": manifest["columns"], "seeds": list(seeds)}


def evaluation(columns=("base", "run1"), value=0.5) -> dict:
    return {"metrics": [{"name": "dino", "title": "DINO", "higher_is_better": True, "model": "m", "note": ""}],
            "rows": [{"column": k, "label": k.upper(), "scores": {"dino": {"value": value, "n": 2}}} for k in columns],
            "best": {"column": "run1", "label": "RUN1", "reason": "best"}}


def test_a_gallery_and_each_image_are_recorded_under_the_subject(library, tmp_path):
    subject = library.create_subject("Rex", "dog")
    run = library_runs.create_run(library, subject, "lora", {"steps": 5}, "toy")
    folder = tmp_path / "g"
    params = write_gallery(folder, columns=("base", f"run{run.id}"))
    gallery = galleries.record_gallery(library, subject.id, params)
    assert gallery.folder == folder and gallery.subject_id == subject.id and gallery.manifest()["token"] == "<sks-dog>"
    assert "2 column(s) × 1 prompt(s) × 2 seed(s)" == gallery.title
    assert [g["id"] for g in library.activity(subject.id)["galleries"]] == [gallery.id]
    assert library.activity(subject.id)["generations"] == []  # listed as the gallery, not image by image
    rows = [dict(r) for r in library._connection().execute("SELECT * FROM generations WHERE gallery_id = ?",
                                                            (gallery.id,))]
    assert len(rows) == 4
    assert {r["run_id"] for r in rows} == {None, run.id}  # the base column belongs to no run
    assert all((folder / json.loads(r["params"])["column"]).is_dir() for r in rows)
    assert galleries.list_galleries(library, subject.id) == [gallery]


def test_evaluating_again_replaces_the_scores_and_deleting_takes_everything(library, tmp_path):
    subject = library.create_subject("Rex", "dog")
    gallery = galleries.record_gallery(library, subject.id, write_gallery(tmp_path / "g"))
    galleries.record_evaluation(library, gallery.id, evaluation(value=0.4))
    galleries.record_evaluation(library, gallery.id, evaluation(value=0.7))
    stored = galleries.evaluation_of(library, gallery.id)
    assert [r["scores"]["dino"]["value"] for r in stored["rows"]] == [0.7, 0.7]
    assert stored["best"]["column"] == "run1" and stored["metrics"][0]["name"] == "dino"
    assert len(library.activity(subject.id)["evaluations"]) == 2
    galleries.delete_gallery(library, gallery.id, delete_files=True)
    assert galleries.evaluation_of(library, gallery.id) is None
    assert library.activity(subject.id)["galleries"] == [] and not (tmp_path / "g").exists()
    assert library._connection().execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 0
    assert library.integrity_problems() == []


def test_a_gallery_whose_subject_was_removed_meanwhile_is_kept_unattached(library, tmp_path):
    subject = library.create_subject("Rex", "dog")
    params = write_gallery(tmp_path / "g")
    library.remove_subject(subject.id)
    assert galleries.record_gallery(library, subject.id, params).subject_id is None


def test_an_unreadable_or_newer_manifest_is_refused_with_the_reason(library, tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(LibraryError, match="not a readable gallery"):
        galleries.read_manifest(tmp_path / "g")
    (tmp_path / "g" / "gallery.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(LibraryError, match="newer"):
        galleries.read_manifest(tmp_path / "g")


def test_columns_from_runs_and_checkpoints(library, tmp_path):
    subject = library.create_subject("Rex", "dog")
    run = library_runs.create_run(library, subject, "lora", {"steps": 5}, "toy")
    with pytest.raises(LibraryError, match="has not finished"):
        galleries.run_column(run)
    run.exports_dir.mkdir(parents=True)
    (run.exports_dir / "run_config.json").write_text("{}")
    for step in (4, 8):
        (run.folder / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
        (run.folder / "checkpoints" / f"step-{step:06d}" / "state.json").write_text("{}")
    (run.folder / "checkpoints" / ".step-000012.tmp").mkdir()  # a checkpoint being written is not offered
    column = galleries.run_column(run, scale=0.6)
    assert column["key"] == f"run{run.id}" and column["adapter"] == {"folder": str(run.exports_dir), "scale": 0.6}
    assert "×0.6" in column["label"]
    steps = galleries.checkpoint_columns(run)
    assert [c["key"] for c in steps] == [f"run{run.id}-step4", f"run{run.id}-step8"]
    assert steps[0]["adapter"]["checkpoint"].endswith("step-000004") and "@ step 4" in steps[0]["label"]
    assert galleries.column_run_id(steps[1]["key"]) == run.id and galleries.column_run_id("base") is None


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("1,5,9", [1, 5, 9]), ("0-2,1,7", [0, 1, 2, 7]),
                                         (" 4 ", [4])])
def test_seed_lists(text, seeds):
    assert galleries.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "0-5000"])
def test_bad_seed_lists_say_what_is_expected(text):
    with pytest.raises(LibraryError, match="seed"):
        galleries.parse_seeds(text)


def test_prompt_lists_shipped_and_saved(library):
    lists = galleries.prompt_lists(library.home)
    paper = galleries.read_prompt_list(lists["paper-20"])
    assert len(paper) == 20 and fill_template(paper[0], "<sks-dog>", "dog") == "a <sks-dog> dog in the jungle"
    assert len(galleries.read_prompt_list(lists["dreambooth-objects-25"])) == 25
    assert len(galleries.read_prompt_list(lists["dreambooth-live-25"])) == 25
    assert all("{token}" in p for name in galleries.PROMPT_LIST_TITLES for p in galleries.read_prompt_list(lists[name]))
    path = galleries.save_prompt_list(library.home, "My scenes!", ["a {token} {class} on Mars", " "])
    assert galleries.prompt_lists(library.home)["My-scenes"] == path
    assert galleries.read_prompt_list(path) == ["a {token} {class} on Mars"]
    with pytest.raises(LibraryError, match="shipped"):
        galleries.save_prompt_list(library.home, "paper-20", ["x"])


def test_toy_subjects_are_recognised_only_on_the_toy_model(library):
    from engine.toy.subjects import SUBJECTS
    from s2s_desktop.demo import toy_model_path

    assert tuple(s.name for s in SUBJECTS) == TOY_SUBJECT_NAMES  # the GUI's copy of the engine's names
    dotty = library.create_subject("dotty", "star")
    rex = library.create_subject("Rex", "dog")
    assert galleries.toy_subject_for(dotty, str(toy_model_path())) == "Dotty"
    assert galleries.toy_subject_for(dotty, "/some/other/model") == ""
    assert galleries.toy_subject_for(rex, str(toy_model_path())) == ""
    assert galleries.default_prompt_list(str(toy_model_path())) == "toy-world"
    assert galleries.default_prompt_list("runwayml/stable-diffusion-v1-5") == "paper-20"
