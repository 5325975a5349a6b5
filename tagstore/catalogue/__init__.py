"""The DuckDB catalogue: every SQL statement of tagstore lives in this package.

DuckDB is the source of truth: tracks, their raw embeddings (float32 BLOBs), tags, examples, scores
and the record of every derived file built from them. This module holds connections, the writer lock
and the ``meta`` table; :mod:`.tracks`, :mod:`.tags` and :mod:`.records` hold the statements of their
tables, each a function taking an open connection.

Connections: writers hold ``write.lock`` (an advisory ``flock``) for the whole command and open DuckDB
read-write only while committing (:func:`transaction`), so readers (queries) can open the catalogue
read-only (:func:`reading`) between batches. DuckDB refuses a read-write connection in a process that
holds a read-only one; :class:`tagstore.store.Store` keeps that rule in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagstore.catalogue.schema import ADDITIONS, FORMAT_VERSION, SCHEMA, additions_digest
from tagstore.errors import StoreBusyError, StoreExistsError, StoreFormatError, StoreNotFoundError

__all__ = [
    "CATALOGUE_FILE", "FORMAT_VERSION", "INDEX_DIR", "CACHE_DIR", "LOCK_FILE", "WriteLock", "bump_generation",
    "catalogue_path", "connect", "create", "generation", "get_meta", "reading", "set_meta", "transaction",
]  # fmt: skip

CATALOGUE_FILE = "catalogue.duckdb"
LOCK_FILE = "write.lock"
INDEX_DIR = "index"
CACHE_DIR = "cache"

Connection = Any
"""A ``duckdb.DuckDBPyConnection`` (typed loosely: duckdb is imported only when a connection is made)."""


def catalogue_path(store: Path) -> Path:
    """The catalogue file of the store folder ``store``."""
    return store / CATALOGUE_FILE


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def connect(store: Path, read_only: bool, wait_s: float = 10.0) -> Connection:
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
    if get_meta(con, ADDITIONS_KEY) != additions_digest():
        con = _add_schema(store, con, read_only)
    return con


ADDITIONS_KEY = "schema_additions"


def _apply_additions(con: Connection) -> None:
    for statement in ADDITIONS:
        con.execute(statement)
    set_meta(con, ADDITIONS_KEY, additions_digest())


def _add_schema(store: Path, con: Connection, read_only: bool) -> Connection:
    """Bring an older store's tables up to :data:`ADDITIONS` (reopening read-write briefly if needed)."""
    import duckdb

    if not read_only:
        _apply_additions(con)
        return con
    con.close()
    try:
        rw = duckdb.connect(str(catalogue_path(store)))
    except duckdb.IOException as exc:
        if not _is_lock_error(exc):
            raise StoreFormatError(f"cannot upgrade the tables of {catalogue_path(store)}: {exc}") from exc
        # Another process holds the catalogue open; the next connection upgrades. Read it as it is meanwhile.
        return duckdb.connect(str(catalogue_path(store)), read_only=True)
    try:
        _apply_additions(rw)
    finally:
        rw.close()
    return duckdb.connect(str(catalogue_path(store)), read_only=True)


def _lock_holder(exc: Exception) -> str:
    text = str(exc)
    marker = "PID "
    if marker in text:
        pid = text.split(marker, 1)[1].split(")", 1)[0].split()[0]
        return f"pid {pid}"
    return "unknown pid"


def check_format(con: Connection, store: Path) -> None:
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


def create(store: Path, meta: dict[str, str]) -> None:
    """Write a new catalogue with the schema and ``meta`` into the folder ``store`` (which exists).

    The file is built under a temporary name and renamed into place, so a half-made store never
    looks like a store. Raises StoreExistsError when the folder already holds a catalogue.
    """
    import duckdb

    final = catalogue_path(store)
    if final.exists():
        raise StoreExistsError(f"a store already exists at {store}; use it, or choose another folder")
    tmp = store / (CATALOGUE_FILE + ".init")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute(SCHEMA)
        _apply_additions(con)
        set_meta(con, "format_version", str(FORMAT_VERSION))
        for key, value in meta.items():
            set_meta(con, key, value)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, final)


@contextlib.contextmanager
def transaction(store: Path) -> Iterator[Connection]:
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
def reading(store: Path) -> Iterator[Connection]:
    """A read-only connection, closed on exit."""
    con = connect(store, read_only=True)
    try:
        yield con
    finally:
        con.close()


SCAN_MEMORY = 1 << 30
"""DuckDB memory limit for a connection that streams every embedding once (bulk index build, vector copy)."""


def limit_memory(con: Connection, max_bytes: int = SCAN_MEMORY) -> None:
    """Cap DuckDB's buffer pool for this database handle (default: 80% of RAM, which a full scan of a 6 GB
    catalogue would fill with cached blocks that are never read again)."""
    con.execute(f"SET memory_limit = '{int(max_bytes)}B'")


def get_meta(con: Connection, key: str, default: str | None = None) -> str | None:
    """A value of the ``meta`` table, or ``default``."""
    row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_meta(con: Connection, key: str, value: str) -> None:
    """Insert or replace a value of the ``meta`` table."""
    con.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value]
    )


def generation(con: Connection) -> int:
    """How many changes the set of embeddings has seen (every derived file records the one it was built from)."""
    return int(get_meta(con, "generation", "0") or 0)


def bump_generation(con: Connection) -> int:
    """Count a change to the set of embeddings; returns the new generation."""
    gen = generation(con) + 1
    set_meta(con, "generation", str(gen))
    return gen


def counts(con: Connection) -> dict[str, int]:
    """Rows in the main tables: tracks, embeddings, tags, failures."""
    tables = (("tracks", "tracks"), ("embeddings", "embeddings"), ("tags", "tags"), ("failures", "ingest_failures"))
    return {name: int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) for name, table in tables}


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
