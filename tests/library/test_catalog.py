"""The catalog: migrations, transactions, tokens, names, crops, removal."""

from __future__ import annotations

import sqlite3

import pytest

from s2s_desktop.library import Crop, Library, LibraryError, import_files, schema
from s2s_desktop.library.tokens import TokenError, default_token, read_vocabulary, validate_token


def test_an_older_catalog_is_migrated_keeping_its_rows(isolated_home):
    db = isolated_home / "library.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    schema.migrate(conn, target=1)  # the first shipped schema: no crops, no runs
    conn.execute(
        "INSERT INTO subjects (name, class_noun, token, folder, created_at) VALUES ('Old', 'dog', '<sks-dog>', '0001-old', 'x')"
    )
    conn.execute(
        "INSERT INTO images (subject_id, pixel_hash, file, source_name, width, height, added_at) "
        "VALUES (1, 'abc', 'images/abc.jpg', 'a.jpg', 400, 300, 'x')"
    )
    conn.close()
    library = Library(isolated_home)
    version = library._connection().execute("PRAGMA user_version").fetchone()[0]
    assert version == schema.SCHEMA_VERSION == 5
    (image,) = library._connection().execute("SELECT crop_x, crop_y, crop_size FROM images").fetchall()
    assert tuple(image) == (50, 0, 300)  # the default centre crop was filled in
    assert library.subject("old").token == "<sks-dog>"
    assert library.activity(1) == {"runs": [], "galleries": [], "generations": [], "edits": [],
                                   "evaluations": []}


def test_a_catalog_from_a_newer_app_is_refused_not_damaged(isolated_home):
    db = isolated_home / "library.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(schema.NewerCatalogError, match="newer Subject2Subject"):
        Library(isolated_home)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 99


def test_a_failed_migration_leaves_the_previous_version(isolated_home, monkeypatch):
    conn = sqlite3.connect(isolated_home / "library.sqlite3", isolation_level=None)
    schema.migrate(conn, target=2)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2] + ("CREATE TABLE runs (id); SELECT nonsense(",))
    with pytest.raises(sqlite3.Error):
        schema.migrate(conn, target=3)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'runs'").fetchall()


def test_a_change_that_fails_half_way_leaves_nothing(library):
    subject = library.create_subject("Biscuit", "dog")
    with pytest.raises(RuntimeError):
        with library.transaction() as conn:
            conn.execute("UPDATE subjects SET name = 'Changed' WHERE id = ?", (subject.id,))
            raise RuntimeError("crash in the middle")
    assert library.subject(subject.id).name == "Biscuit"


def test_names_are_unique_and_never_paths(library):
    library.create_subject("Biscuit", "dog")
    with pytest.raises(LibraryError, match="already exists"):
        library.create_subject("biscuit", "dog")
    for name in ("../../etc", "a/b\\c", "..", "Ünïcødé 🐶 ドッグ", "/abs/path"):
        subject = library.create_subject(name, "dog")
        folder = library.subject_folder(subject)
        assert folder.parent == library.subjects_dir.resolve() and folder.is_dir()
        assert library.subject(name).id == subject.id
    for bad in ("", "   ", "evil\u202eexe.jpg", "line\nbreak", "x" * 81):
        with pytest.raises(LibraryError):
            library.create_subject(bad, "dog")


def test_rename_keeps_the_folder_and_refuses_clashes(library):
    a = library.create_subject("A", "dog")
    library.create_subject("B", "dog")
    renamed = library.rename_subject(a.id, "Biscuit")
    assert renamed.name == "Biscuit" and renamed.folder == a.folder
    with pytest.raises(LibraryError, match="already exists"):
        library.rename_subject(a.id, "b")


def test_default_tokens_avoid_other_subjects_and_the_vocabulary(library):
    first = library.create_subject("One", "dog")
    second = library.create_subject("Two", "Dog")
    assert first.token == "<sks-dog>" and second.token not in (first.token,) and second.token.endswith("-dog>")
    vocabulary = {"<sks-cat></w>", "cat</w>"}
    assert default_token("cat", set(), vocabulary) == "<zwx-cat>"
    assert default_token("chien été", set()) == "<sks-chien-ete>"


def test_typed_tokens_are_validated(library):
    library.create_subject("One", "dog", token="<my-dog>")
    with pytest.raises(LibraryError, match="another subject"):
        library.create_subject("Two", "dog", token="<MY-dog>")
    for bad in ("ab", "<a b>", "<>", "<dog", "<ab/c>", "two words", "ça"):
        with pytest.raises(TokenError):
            validate_token(bad)
    with pytest.raises(TokenError, match="already a word"):
        validate_token("<red>", vocabulary={"<red></w>"})
    with pytest.raises(TokenError, match="differ from the class noun"):
        validate_token("<dog>", class_noun="dog")
    assert validate_token("  <Sks-Dog2> ") == "<sks-dog2>"
    assert validate_token("bsktdog", vocabulary={"dog</w>"}) == "bsktdog"  # a plain made-up word is fine
    with pytest.raises(TokenError, match="already a word"):
        validate_token("sks", vocabulary={"sks</w>"})  # … but not one the model already has


def test_the_toy_models_vocabulary_is_read_from_its_tokenizer_json():
    from s2s_desktop.demo import toy_model_path

    vocabulary = read_vocabulary(toy_model_path())
    assert vocabulary and "star</w>" in vocabulary and "<|endoftext|>" in vocabulary
    assert read_vocabulary("/nowhere") is None


def test_crops_are_data_clamped_inside_the_image(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    report = import_files(library, subject, [photo("a.png", size=(400, 300))])
    (record,) = library.images(subject.id)
    assert record.crop == Crop(50, 0, 300)
    before = record.path.read_bytes()
    moved = library.set_crop(record.id, Crop(350, -20, 120))
    assert moved.crop == Crop(280, 0, 120)
    assert library.set_crop(record.id, Crop(0, 0, 9999)).crop == Crop(0, 0, 300)
    assert record.path.read_bytes() == before  # the original is never rewritten
    assert report.imported


def test_removing_a_subject_removes_its_rows_and_files(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    import_files(library, subject, [photo("a.png"), photo("b.png", seed=1)])
    folder = library.subject_folder(subject)
    library.remove_subject(subject.id)
    assert not folder.exists() and library.subjects() == []
    assert library._connection().execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


def test_orphans_of_an_interrupted_import_are_cleaned(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    import_files(library, subject, [photo("a.png")])
    images_dir = library.subject_folder(subject) / "images"
    (images_dir / "deadbeef.png").write_bytes(b"renamed but never committed")
    (images_dir / ".x.png.123.tmp").write_bytes(b"half written")
    (library.subjects_dir / "0042-gone").mkdir()  # a deleted subject's folder
    removed = {p.name for p in library.clean_orphans()}
    assert removed == {"deadbeef.png", ".x.png.123.tmp", "0042-gone"}
    assert len(list(images_dir.iterdir())) == 1 and library.integrity_problems() == []


def test_a_subject_deleted_mid_import_ends_that_import_cleanly(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    paths = [photo(f"p{i}.png", seed=i) for i in range(4)]

    def delete_after_first(done, total, result):
        if done == 1:
            library.remove_subject(subject.id)

    report = import_files(library, subject, paths, on_result=delete_after_first)
    assert [r.code for r in report.results] == ["", "subject_gone"]
    assert library.subjects() == [] and library.integrity_problems() == []


def test_a_missing_stored_photo_is_a_library_error(library, photo):
    subject = library.create_subject("Biscuit", "dog")
    import_files(library, subject, [photo("a.png")])
    (record,) = library.images(subject.id)
    record.path.unlink()
    with pytest.raises(LibraryError, match="cannot be read"):
        library.thumbnail(record)
