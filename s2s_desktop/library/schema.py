"""The catalog's schema as an ordered list of migrations; ``PRAGMA user_version`` says how many ran.

Never edit a migration that has shipped: add the next one. Each runs in its own transaction together
with the ``user_version`` bump, so a crash mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3

V1_SUBJECTS_AND_IMAGES = """
CREATE TABLE subjects (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    class_noun  TEXT NOT NULL,
    token       TEXT NOT NULL,
    folder      TEXT NOT NULL UNIQUE,      -- under subjects/, derived from id, never from the name
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX subjects_name ON subjects(name COLLATE NOCASE);
CREATE UNIQUE INDEX subjects_token ON subjects(token);
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    pixel_hash  TEXT NOT NULL,              -- sha256 of the upright 8-bit RGB pixels
    file        TEXT NOT NULL,              -- the original's bytes, relative to the subject folder
    source_name TEXT NOT NULL,              -- the file name it was imported from
    width       INTEGER NOT NULL,           -- after EXIF orientation
    height      INTEGER NOT NULL,
    added_at    TEXT NOT NULL,
    UNIQUE (subject_id, pixel_hash)
);
"""

# v2: crops as data, near-duplicate hashes, and what import did to each file.
V2_CROPS = """
ALTER TABLE images ADD COLUMN crop_x INTEGER;
ALTER TABLE images ADD COLUMN crop_y INTEGER;
ALTER TABLE images ADD COLUMN crop_size INTEGER;
ALTER TABLE images ADD COLUMN dhash INTEGER;
ALTER TABLE images ADD COLUMN format TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN conversions TEXT NOT NULL DEFAULT '';
-- photos imported before crops existed get the default: the centred square
UPDATE images SET crop_size = MIN(width, height),
                  crop_x = (width - MIN(width, height)) / 2,
                  crop_y = (height - MIN(width, height)) / 2;
"""

# v3: everything made from a subject, so it can all be found in one place.
V3_RUNS_AND_OUTPUTS = """
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    method      TEXT NOT NULL,              -- dreambooth | lora | ti | pivotal
    config      TEXT NOT NULL DEFAULT '{}', -- JSON
    status      TEXT NOT NULL DEFAULT 'queued',
    folder      TEXT NOT NULL DEFAULT '',   -- checkpoints, samples, exports
    created_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE generations (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
    run_id      INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    prompt      TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    model       TEXT NOT NULL DEFAULT '',
    params      TEXT NOT NULL DEFAULT '{}',
    file        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE edits (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
    source_file TEXT NOT NULL DEFAULT '',
    params      TEXT NOT NULL DEFAULT '{}',
    file        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE evaluations (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
    run_id      INTEGER REFERENCES runs(id) ON DELETE CASCADE,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);
CREATE INDEX images_subject ON images(subject_id);
CREATE INDEX runs_subject ON runs(subject_id);
CREATE INDEX generations_subject ON generations(subject_id);
CREATE INDEX edits_subject ON edits(subject_id);
"""

# v4: what a training run needs to be resumed and shown without its folder: model, token, progress.
V4_RUN_DETAILS = """
ALTER TABLE runs ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN token TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN total_steps INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN result TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN error TEXT NOT NULL DEFAULT '';
"""

# v5: galleries (runs × prompts × seeds compared side by side), their images and their scores.
V5_GALLERIES = """
CREATE TABLE galleries (
    id          INTEGER PRIMARY KEY,
    subject_id  INTEGER REFERENCES subjects(id) ON DELETE CASCADE,
    folder      TEXT NOT NULL,              -- absolute: the gallery job's out_dir (gallery.json inside)
    title       TEXT NOT NULL DEFAULT '',
    params      TEXT NOT NULL DEFAULT '{}', -- the gallery job's parameters, JSON
    created_at  TEXT NOT NULL
);
CREATE INDEX galleries_subject ON galleries(subject_id);
ALTER TABLE generations ADD COLUMN gallery_id INTEGER REFERENCES galleries(id) ON DELETE CASCADE;
ALTER TABLE evaluations ADD COLUMN gallery_id INTEGER REFERENCES galleries(id) ON DELETE CASCADE;
ALTER TABLE evaluations ADD COLUMN column_key TEXT NOT NULL DEFAULT '';
ALTER TABLE evaluations ADD COLUMN label TEXT NOT NULL DEFAULT '';
"""

MIGRATIONS: tuple[str, ...] = (V1_SUBJECTS_AND_IMAGES, V2_CROPS, V3_RUNS_AND_OUTPUTS, V4_RUN_DETAILS, V5_GALLERIES)
SCHEMA_VERSION = len(MIGRATIONS)


class NewerCatalogError(RuntimeError):
    pass


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the catalog to ``target``; returns the version it started at."""
    start = conn.execute("PRAGMA user_version").fetchone()[0]
    if start > SCHEMA_VERSION:
        raise NewerCatalogError(
            f"the library was written by a newer Subject2Subject (catalog version {start}, this one knows "
            f"{SCHEMA_VERSION}); update the app, or point S2S_HOME at another folder"
        )
    for version in range(start, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would commit on its own; statement by statement keeps one transaction.
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
