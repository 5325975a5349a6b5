"""The catalogue's tables, as one DDL script; :data:`FORMAT_VERSION` counts incompatible changes to it."""

from __future__ import annotations

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE SEQUENCE track_ids START 1;
CREATE TABLE tracks (
    id BIGINT PRIMARY KEY DEFAULT nextval('track_ids'),
    path VARCHAR NOT NULL UNIQUE,
    content_hash VARCHAR NOT NULL UNIQUE,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    duration_s DOUBLE NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    format VARCHAR,
    title VARCHAR,
    artist VARCHAR,
    album VARCHAR,
    genre VARCHAR,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE embeddings (
    track_id BIGINT PRIMARY KEY,
    layout_digest VARCHAR NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE ingest_failures (
    path VARCHAR PRIMARY KEY,
    error VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    failed_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE SEQUENCE tag_ids START 1;
CREATE TABLE tags (
    id BIGINT PRIMARY KEY DEFAULT nextval('tag_ids'),
    name VARCHAR NOT NULL UNIQUE,
    kind VARCHAR NOT NULL,
    source VARCHAR,
    method VARCHAR,
    method_choice VARCHAR,
    threshold DOUBLE,
    cv_ap DOUBLE,
    model BLOB,
    model_version INTEGER,
    n_pos INTEGER NOT NULL DEFAULT 0,
    n_neg INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    trained_at TIMESTAMP
);
CREATE TABLE tag_examples (
    tag_id BIGINT NOT NULL,
    track_id BIGINT NOT NULL,
    label SMALLINT NOT NULL,
    source VARCHAR NOT NULL,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tag_id, track_id)
);
CREATE TABLE tag_external_examples (
    tag_id BIGINT NOT NULL,
    content_hash VARCHAR NOT NULL,
    label SMALLINT NOT NULL,
    path VARCHAR NOT NULL,
    vector BLOB NOT NULL,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tag_id, content_hash)
);
CREATE TABLE tag_scores (
    tag_id BIGINT NOT NULL,
    track_id BIGINT NOT NULL,
    score REAL NOT NULL,
    predicted BOOLEAN NOT NULL,
    PRIMARY KEY (tag_id, track_id)
);
CREATE TABLE tag_suggestions (
    tag_id BIGINT NOT NULL,
    track_id BIGINT NOT NULL,
    score REAL NOT NULL,
    sources VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (tag_id, track_id)
);
CREATE SEQUENCE index_versions_ids START 1;
CREATE TABLE index_versions (
    version BIGINT PRIMARY KEY DEFAULT nextval('index_versions_ids'),
    file VARCHAR NOT NULL,
    factory VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    count BIGINT NOT NULL,
    checksum VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    layout_digest VARCHAR NOT NULL,
    generation BIGINT NOT NULL,
    stats_count BIGINT NOT NULL,
    stats_mean BLOB,
    stats_std BLOB,
    params VARCHAR NOT NULL,
    built_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    active BOOLEAN NOT NULL
);
"""

ADDITIONS: tuple[str, ...] = (
    # The answers given while teaching a tag by ear (web page): undo pops the last one; the learning
    # curve is their cross-validated AP against the number of labels. ``previous``: the track's label
    # before the answer (NULL: it was no example); ``created``: the answer created the tag.
    """CREATE TABLE IF NOT EXISTS tag_answers (
        tag_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        track_id BIGINT NOT NULL,
        answer VARCHAR NOT NULL,
        previous SMALLINT,
        created BOOLEAN NOT NULL,
        n_pos INTEGER NOT NULL,
        n_neg INTEGER NOT NULL,
        cv_ap DOUBLE,
        answered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (tag_id, seq)
    )""",
    # The write log of `tagstore write`: each file's field before and after (JSON lists, NULL: absent),
    # with the file's hash either side, so `write --undo` restores exactly what one run changed.
    """CREATE TABLE IF NOT EXISTS file_writes (
        run BIGINT NOT NULL,
        track_id BIGINT NOT NULL,
        path VARCHAR NOT NULL,
        field VARCHAR NOT NULL,
        old_values VARCHAR,
        new_values VARCHAR,
        old_hash VARCHAR NOT NULL,
        new_hash VARCHAR NOT NULL,
        written_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
        undone BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (run, track_id)
    )""",
    # Work that follows a commit (rescore the new tracks, refit after a re-embed), recorded in the committing
    # transaction and deleted when done, so a kill in between leaves it for the next writing command.
    "CREATE TABLE IF NOT EXISTS pending_work (task VARCHAR PRIMARY KEY, since TIMESTAMP NOT NULL DEFAULT current_timestamp)",
    # decisions (issue 11): the threshold rule a tag keeps, and what it promises at its threshold
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS rule VARCHAR",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS rule_value DOUBLE",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS threshold_p DOUBLE",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS expected_precision DOUBLE",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS expected_recall DOUBLE",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS cv_ap_std DOUBLE",
    "ALTER TABLE tags ADD COLUMN IF NOT EXISTS base_rate DOUBLE",
)
"""Idempotent DDL added since format 1 (``CREATE TABLE IF NOT EXISTS ...``, ``ALTER TABLE ... ADD COLUMN IF
NOT EXISTS ...``), in order. A store whose recorded digest of these differs gets them applied by the next
connection (:func:`tagstore.catalogue.connect`); a new store gets them at ``init``. Append, never edit."""


def additions_digest() -> str:
    """Identifies the :data:`ADDITIONS` a store has (recorded in ``meta`` as ``schema_additions``)."""
    import hashlib

    return hashlib.sha256("\n".join(ADDITIONS).encode()).hexdigest()[:16]
