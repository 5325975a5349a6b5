"""The DuckDB catalogue: schema, connections and the writer lock.

DuckDB is the source of truth: tracks, their raw embeddings (float32 BLOBs), tags, examples,
scores and the record of every index file built from them. Writers hold ``write.lock`` (an
advisory ``flock``) for the whole command and open DuckDB only while committing a batch, so
readers (queries) can open the catalogue read-only between batches.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagstore.errors import StoreBusyError, StoreFormatError, StoreNotFoundError

FORMAT_VERSION = 1
CATALOGUE_FILE = "catalogue.duckdb"
LOCK_FILE = "write.lock"
INDEX_DIR = "index"

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


def catalogue_path(store: Path) -> Path:
    return store / CATALOGUE_FILE


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def connect(store: Path, read_only: bool, wait_s: float = 10.0) -> Any:
    """Open the catalogue; a briefly held DuckDB lock (a writer committing) is waited for up to ``wait_s``."""
    import duckdb

    path = catalogue_path(store)
    if not path.is_file():
        raise StoreNotFoundError(
            f"no tagstore store at {store}; create one with `tagstore init {store}` or pass --store"
        )
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise StoreFormatError(f"cannot open the catalogue {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the store {store} is locked by another process ({_lock_holder(exc)}); "
                    "wait for it to finish and try again"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:
            raise StoreFormatError(
                f"{path} is not a tagstore catalogue ({exc.__class__.__name__}); point --store at a store folder"
            ) from exc
    check_format(con, store)
    return con


def _lock_holder(exc: Exception) -> str:
    text = str(exc)
    marker = "PID "
    if marker in text:
        pid = text.split(marker, 1)[1].split(")", 1)[0].split()[0]
        return f"pid {pid}"
    return "unknown pid"


def check_format(con: Any, store: Path) -> None:
    """Refuse catalogues of a newer format, and files that are not tagstore catalogues."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    except Exception as exc:  # duckdb.CatalogException: no meta table
        con.close()
        raise StoreFormatError(
            f"{catalogue_path(store)} is not a tagstore catalogue (no meta table); point --store at a store folder"
        ) from exc
    version = int(row[0]) if row else 0
    if version > FORMAT_VERSION:
        con.close()
        raise StoreFormatError(
            f"the store {store} has format {version}, newer than this tagstore reads ({FORMAT_VERSION}); "
            "upgrade tagstore: pip install -U tagstore"
        )
    if version < 1:
        con.close()
        raise StoreFormatError(f"the store {store} has no format version; it was not made by tagstore")


@contextlib.contextmanager
def transaction(store: Path) -> Iterator[Any]:
    """A read-write connection inside one transaction: committed on success, rolled back on error."""
    con = connect(store, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


@contextlib.contextmanager
def reading(store: Path) -> Iterator[Any]:
    """A read-only connection, closed on exit."""
    con = connect(store, read_only=True)
    try:
        yield con
    finally:
        con.close()


def get_meta(con: Any, key: str, default: str | None = None) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_meta(con: Any, key: str, value: str) -> None:
    con.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value]
    )


def bump_generation(con: Any) -> int:
    """Count a change to the set of embeddings; every index records the generation it was built from."""
    gen = int(get_meta(con, "generation", "0") or 0) + 1
    set_meta(con, "generation", str(gen))
    return gen


class WriteLock:
    """Advisory lock held by a writing command for its whole run (``flock`` on ``write.lock``)."""

    def __init__(self, store: Path) -> None:
        self.path = store / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> WriteLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreBusyError(
                f"another process (pid {holder}) is writing the store {self.path.parent}; "
                "wait for it to finish, then run the command again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
