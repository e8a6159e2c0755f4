"""The subject library: a SQLite catalog plus per-subject folders of original photos.

Layout under the app home (``S2S_HOME`` or the platform's user data folder)::

    library.sqlite3                      the catalog (WAL journal beside it)
    subjects/0001-biscuit/images/<hash>.jpg   originals, byte for byte, named by pixel hash
    cache/thumbs/…                       thumbnails (safe to delete)

Every change is one transaction. A file joins the library inside the transaction that records it
(written to a temp name, renamed, then committed), so a crash leaves either both or an orphan file
that :meth:`Library.clean_orphans` removes at the next start — never a row without its file.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s2s_desktop.library import imaging, schema
from s2s_desktop.library.tokens import TokenError, default_token, validate_token

CATALOG_NAME = "library.sqlite3"
SUBJECT_FOLDER = re.compile(r"^\d{4,}-[a-z0-9-]*$")
MAX_NAME_CHARS = 80


class LibraryError(ValueError):
    """Something the user asked for that the library cannot do; the message says why."""


@dataclass(frozen=True)
class Subject:
    id: int
    name: str
    class_noun: str
    token: str
    folder: str
    created_at: str
    image_count: int = 0


@dataclass(frozen=True)
class ImageRecord:
    id: int
    subject_id: int
    pixel_hash: str
    path: Path  # the stored original
    source_name: str
    width: int
    height: int
    crop: imaging.Crop
    dhash: int | None
    format: str
    conversions: str
    added_at: str


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def clean_name(name: str) -> str:
    """Names are data, never paths: NFC, trimmed, no control characters, at most 80 characters."""
    cleaned = unicodedata.normalize("NFC", str(name)).strip()
    if not cleaned:
        raise LibraryError("a subject needs a name")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for ch in cleaned):
        raise LibraryError(f"the name {cleaned!r} contains invisible or control characters; type it plainly")
    if len(cleaned) > MAX_NAME_CHARS:
        raise LibraryError(f"a subject name can be at most {MAX_NAME_CHARS} characters")
    return cleaned


def folder_slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:32].strip("-")


class Library:
    def __init__(self, home: Path | None = None):
        if home is None:
            from s2s_desktop.settings import app_home

            home = app_home()
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / CATALOG_NAME
        self.subjects_dir = self.home / "subjects"
        self.thumbs_dir = self.home / "cache" / "thumbs"
        self._local = threading.local()  # sqlite connections are per thread
        with self._connection() as conn:
            schema.migrate(conn)

    # ------------------------------------------------------------------ connections
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One change, all or nothing. IMMEDIATE takes the write lock up front, so orphan cleaning
        in another process never sees a half-finished import."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # a COMMIT that fails (disk full: SQLITE_FULL) may leave the transaction open, and then
            # every later BEGIN fails; SQLite may also have rolled back already (then ROLLBACK would
            # raise and hide the real error)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ subjects
    def subjects(self) -> list[Subject]:
        rows = self._connection().execute(
            "SELECT s.*, (SELECT COUNT(*) FROM images i WHERE i.subject_id = s.id) AS image_count "
            "FROM subjects s ORDER BY s.name COLLATE NOCASE"
        )
        return [Subject(**dict(row)) for row in rows]

    def subject(self, name_or_id: str | int) -> Subject:
        key = "id" if isinstance(name_or_id, int) else "name"
        row = self._connection().execute(
            f"SELECT s.*, (SELECT COUNT(*) FROM images i WHERE i.subject_id = s.id) AS image_count "
            f"FROM subjects s WHERE s.{key} = ? COLLATE NOCASE",
            (name_or_id if key == "id" else clean_name(name_or_id),),
        ).fetchone()
        if row is None:
            raise LibraryError(f"there is no subject called {name_or_id!r}")
        return Subject(**dict(row))

    def find_subject(self, name: str) -> Subject | None:
        try:
            return self.subject(name)
        except LibraryError:
            return None

    def taken_tokens(self, except_id: int | None = None) -> set[str]:
        rows = self._connection().execute("SELECT id, token FROM subjects")
        return {row["token"] for row in rows if row["id"] != except_id}

    def suggest_token(self, class_noun: str, vocabulary: set[str] | None = None) -> str:
        return default_token(class_noun, self.taken_tokens(), vocabulary)

    def create_subject(
        self, name: str, class_noun: str, token: str | None = None, vocabulary: set[str] | None = None
    ) -> Subject:
        name = clean_name(name)
        class_noun = unicodedata.normalize("NFC", class_noun).strip().lower()
        if not class_noun or len(class_noun) > 40:
            raise LibraryError("a subject needs a class noun of 1-40 characters (e.g. dog, mug, person)")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM subjects WHERE name = ? COLLATE NOCASE", (name,)).fetchone():
                raise LibraryError(f"a subject called {name!r} already exists; pick another name")
            taken = {row[0] for row in conn.execute("SELECT token FROM subjects")}
            try:
                token = (
                    validate_token(token, class_noun=class_noun, taken=taken, vocabulary=vocabulary)
                    if token
                    else default_token(class_noun, taken, vocabulary)
                )
            except TokenError as exc:
                raise LibraryError(str(exc)) from None
            cursor = conn.execute(
                "INSERT INTO subjects (name, class_noun, token, folder, created_at) VALUES (?, ?, ?, '', ?)",
                (name, class_noun, token, now()),
            )
            subject_id = cursor.lastrowid
            folder = f"{subject_id:04d}-{folder_slug(name)}"
            conn.execute("UPDATE subjects SET folder = ? WHERE id = ?", (folder, subject_id))
        (self.subjects_dir / folder / "images").mkdir(parents=True, exist_ok=True)
        return self.subject(subject_id)

    def rename_subject(self, subject_id: int, new_name: str) -> Subject:
        """The folder keeps its name (it is derived from the id), so nothing on disk moves."""
        new_name = clean_name(new_name)
        with self.transaction() as conn:
            clash = conn.execute(
                "SELECT id FROM subjects WHERE name = ? COLLATE NOCASE AND id != ?", (new_name, subject_id)
            ).fetchone()
            if clash:
                raise LibraryError(f"a subject called {new_name!r} already exists; pick another name")
            if conn.execute("UPDATE subjects SET name = ? WHERE id = ?", (new_name, subject_id)).rowcount == 0:
                raise LibraryError("that subject no longer exists")
        return self.subject(subject_id)

    def set_token(self, subject_id: int, token: str, vocabulary: set[str] | None = None) -> Subject:
        subject = self.subject(subject_id)
        try:
            token = validate_token(
                token, class_noun=subject.class_noun, taken=self.taken_tokens(subject_id), vocabulary=vocabulary
            )
        except TokenError as exc:
            raise LibraryError(str(exc)) from None
        with self.transaction() as conn:
            conn.execute("UPDATE subjects SET token = ? WHERE id = ?", (token, subject_id))
        return self.subject(subject_id)

    def remove_subject(self, subject_id: int) -> Subject:
        """Rows go first (one transaction); the folder after. A crash in between leaves a folder with
        no subject, which the next start removes."""
        subject = self.subject(subject_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
        self._remove_folder(subject.folder)
        return subject

    def subject_folder(self, subject: Subject) -> Path:
        folder = (self.subjects_dir / subject.folder).resolve()
        if self.subjects_dir.resolve() not in folder.parents:  # belt and braces: folders come from ids
            raise LibraryError(f"subject folder {subject.folder!r} is outside the library")
        return folder

    def _remove_folder(self, folder: str) -> None:
        if SUBJECT_FOLDER.match(folder) and (self.subjects_dir / folder).is_dir():
            shutil.rmtree(self.subjects_dir / folder, ignore_errors=True)

    # ------------------------------------------------------------------ images
    def images(self, subject_id: int) -> list[ImageRecord]:
        subject = self.subject(subject_id)
        rows = self._connection().execute(
            "SELECT * FROM images WHERE subject_id = ? ORDER BY id", (subject_id,)
        ).fetchall()
        return [self._image(row, subject) for row in rows]

    def image(self, image_id: int) -> ImageRecord:
        row = self._connection().execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise LibraryError("that photo is no longer in the library")
        return self._image(row, self.subject(row["subject_id"]))

    def _image(self, row: sqlite3.Row, subject: Subject) -> ImageRecord:
        return ImageRecord(
            id=row["id"],
            subject_id=row["subject_id"],
            pixel_hash=row["pixel_hash"],
            path=self.subjects_dir / subject.folder / row["file"],
            source_name=row["source_name"],
            width=row["width"],
            height=row["height"],
            crop=imaging.Crop(row["crop_x"], row["crop_y"], row["crop_size"]),
            dhash=None if row["dhash"] is None else imaging.unsigned64(row["dhash"]),
            format=row["format"],
            conversions=row["conversions"],
            added_at=row["added_at"],
        )

    def add_image_file(
        self, subject: Subject, source: Path, normalized: imaging.NormalizedImage, pixel_hash: str, dhash: int
    ) -> ImageRecord:
        """Store one validated photo. The copy, rename and insert share one transaction."""
        width, height = normalized.size
        suffix = source.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", source.suffix.lower()) else ""
        relative = f"images/{pixel_hash[:20]}{suffix or '.' + normalized.format.lower()}"
        target = self.subject_folder(subject) / relative
        crop = imaging.Crop.centre(width, height)
        copied = False
        try:
            with self.transaction() as conn:
                imaging.copy_atomic(source, target)
                copied = True
                cursor = conn.execute(
                    "INSERT INTO images (subject_id, pixel_hash, file, source_name, width, height, added_at, "
                    "crop_x, crop_y, crop_size, dhash, format, conversions) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        subject.id, pixel_hash, relative, source.name[:255], width, height, now(),
                        crop.x, crop.y, crop.size, imaging.signed64(dhash), normalized.format,
                        "; ".join(normalized.conversions),
                    ),
                )
        except BaseException:
            # the COMMIT too can fail (disk full): then the copied file has no row and must go
            if copied:
                target.unlink(missing_ok=True)
            raise
        return self.image(cursor.lastrowid)

    def find_by_hash(self, subject_id: int, pixel_hash: str) -> ImageRecord | None:
        row = self._connection().execute(
            "SELECT * FROM images WHERE subject_id = ? AND pixel_hash = ?", (subject_id, pixel_hash)
        ).fetchone()
        return None if row is None else self._image(row, self.subject(subject_id))

    def set_crop(self, image_id: int, crop: imaging.Crop) -> ImageRecord:
        record = self.image(image_id)
        crop = crop.clamped(record.width, record.height)
        with self.transaction() as conn:
            conn.execute(
                "UPDATE images SET crop_x = ?, crop_y = ?, crop_size = ? WHERE id = ?",
                (crop.x, crop.y, crop.size, image_id),
            )
        return self.image(image_id)

    def remove_image(self, image_id: int) -> None:
        record = self.image(image_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
        record.path.unlink(missing_ok=True)

    def thumbnail(self, record: ImageRecord, size: int = 192) -> Path:
        """The crop as a ``size``² PNG, cached by pixel hash and crop (slow on big photos: call it off
        the GUI thread)."""
        c = record.crop
        path = self.thumbs_dir / f"{record.pixel_hash[:20]}-{c.x}-{c.y}-{c.size}-{size}.png"
        if not path.is_file():
            try:
                image = imaging.load_normalized(record.path)
            except imaging.ImageRefused as exc:
                raise LibraryError(f"the stored photo {record.path.name} cannot be read: {exc.reason}") from None
            imaging.save_png_atomic(imaging.cropped(image, record.crop, size), path)
        return path

    def cover(self, subject_id: int, size: int = 96) -> Path | None:
        first = self._connection().execute(
            "SELECT id FROM images WHERE subject_id = ? ORDER BY id LIMIT 1", (subject_id,)
        ).fetchone()
        return None if first is None else self.thumbnail(self.image(first[0]), size)

    # ------------------------------------------------------------------ everything made from a subject
    def activity(self, subject_id: int) -> dict[str, list[dict]]:
        """Runs, galleries (generations) and edits of a subject, newest first, in one place."""
        conn = self._connection()
        out = {}
        for table in ("runs", "galleries", "generations", "edits", "evaluations"):
            # a gallery's images are listed as the gallery, not one by one
            where = " AND gallery_id IS NULL" if table == "generations" else ""
            rows = conn.execute(f"SELECT * FROM {table} WHERE subject_id = ?{where} ORDER BY id DESC", (subject_id,))
            out[table] = [dict(row) for row in rows]
        return out

    # ------------------------------------------------------------------ housekeeping
    def clean_orphans(self) -> list[Path]:
        """Remove files an interrupted import or delete left behind; returns what was removed.

        Runs under the write lock so it never races a live import in another process."""
        removed: list[Path] = []
        if not self.subjects_dir.is_dir():
            return removed
        with self.transaction() as conn:
            folders = {row["folder"]: row["id"] for row in conn.execute("SELECT id, folder FROM subjects")}
            known = {(row[0], row[1]) for row in conn.execute("SELECT subject_id, file FROM images")}
            for entry in self.subjects_dir.iterdir():
                if entry.name not in folders:
                    if entry.is_dir() and SUBJECT_FOLDER.match(entry.name):
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
                    continue
                images_dir = entry / "images"
                if not images_dir.is_dir():
                    continue
                for file in images_dir.iterdir():
                    if file.is_file() and (folders[entry.name], f"images/{file.name}") not in known:
                        file.unlink(missing_ok=True)
                        removed.append(file)
        return removed

    def integrity_problems(self) -> list[str]:
        """Empty when the catalog is sound and every image row has its file."""
        conn = self._connection()
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
        problems += [f"foreign key: {tuple(row)}" for row in conn.execute("PRAGMA foreign_key_check")]
        for subject in self.subjects():
            problems += [f"missing file {r.path}" for r in self.images(subject.id) if not r.path.is_file()]
        return problems
