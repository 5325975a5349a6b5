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
from tagstore.errors import (
    StorageError,
    StoreBusyError,
    StoreCorruptError,
    StoreDamagedError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from tagstore.fileio import WRITE_ERRNOS, write_problem

__all__ = [
    "CATALOGUE_FILE", "FORMAT_VERSION", "INDEX_DIR", "CACHE_DIR", "LOCK_FILE", "WriteLock", "bump_generation",
    "catalogue_path", "connect", "create", "generation", "get_meta", "guard", "reading", "set_meta", "transaction",
]  # fmt: skip

DUCKDB_CONFIG = {"autoload_known_extensions": False, "autoinstall_known_extensions": False,
                 "python_enable_replacements": False}  # fmt: skip
"""Every connection: a catalogue never makes DuckDB load or download an extension (a SQLite file given as
the catalogue would otherwise fetch ``sqlite_scanner`` from the internet), and a missing table is never
replaced by a Python variable of the same name."""
RESTORE_HINT = "restore the store from a backup (`tagstore backup DEST` makes one), or run `tagstore check`"

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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _duckdb_connect(path: Path, read_only: bool) -> Connection:
    import duckdb

    return duckdb.connect(str(path), read_only=read_only, config=dict(DUCKDB_CONFIG))


def _check_header(store: Path, path: Path) -> None:
    """Refuse a file that is not a DuckDB database before DuckDB tries to read it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise StorageError(f"cannot read the catalogue {path}: {exc.strerror}; fix its permissions") from None
    if head.startswith(b"SQLite format 3"):
        raise StoreFormatError(f"{path} is a SQLite database, not a tagstore catalogue; point --store at a store folder")
    if len(head) < 12 or head[8:12] != b"DUCK":
        raise StoreCorruptError(
            f"the catalogue {path} is not a DuckDB file ({len(head)}-byte header without DuckDB's mark); {RESTORE_HINT}"
        )


def connect(store: Path, read_only: bool, wait_s: float = 10.0) -> Connection:
    """Open the catalogue; a briefly held DuckDB lock (a writer committing) is waited for up to ``wait_s``."""
    import duckdb

    path = catalogue_path(store)
    if not path.is_file():
        raise StoreNotFoundError(
            f"no tagstore store at {store}; create one with `tagstore init {store}` or pass --store"
        )
    _check_header(store, path)
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            con = _duckdb_connect(path, read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise _open_error(path, exc) from exc
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the store {store} is locked by another process ({_lock_holder(exc)}); "
                    "wait for it to finish and try again"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:
            raise _open_error(path, exc) from exc
    with guard(store):
        check_format(con, store)
        if get_meta(con, ADDITIONS_KEY) != additions_digest():
            con = _add_schema(store, con, read_only)
    return con


def _open_error(path: Path, exc: BaseException) -> Exception:
    """The one-line error for a catalogue DuckDB cannot open: corrupt, or unwritable."""
    fix = write_problem(str(exc))
    if fix is not None:
        return StorageError(f"cannot open the catalogue {path}: {fix}, then run the command again")
    return StoreCorruptError(f"the catalogue {path} is corrupt (DuckDB: {_first_line(exc)}); {RESTORE_HINT}")


@contextlib.contextmanager
def guard(store: Path) -> Iterator[None]:
    """Name DuckDB failures inside the block as the store's: corrupt, damaged (edited), or unwritable."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        path = catalogue_path(store)
        text = _first_line(exc)
        fix = write_problem(str(exc))
        if fix is not None:
            raise StorageError(
                f"cannot write the catalogue {path}: {fix}, then run the command again "
                "(the last batch was rolled back; what was committed before is kept)"
            ) from exc
        if "corrupt" in text.lower() or "checksum" in text.lower() or isinstance(exc, duckdb.IOException):
            raise StoreCorruptError(f"the catalogue {path} is corrupt (DuckDB: {text}); {RESTORE_HINT}") from exc
        raise StoreDamagedError(
            f"the catalogue {path} is not as tagstore wrote it (DuckDB: {text}); run `tagstore check`, "
            f"else {RESTORE_HINT.split(' (')[0]}"
        ) from exc


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
    path = catalogue_path(store)
    try:
        rw = _duckdb_connect(path, read_only=False)
    except duckdb.IOException as exc:
        if not _is_lock_error(exc):
            raise _open_error(path, exc) from exc
        # Another process holds the catalogue open; the next connection upgrades. Read it as it is meanwhile.
        return _duckdb_connect(path, read_only=True)
    try:
        _apply_additions(rw)
    finally:
        rw.close()
    return _duckdb_connect(path, read_only=True)


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
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        con.close()
        raise StoreDamagedError(
            f"the store {store} records format version {row[0]!r}, not a whole number; it was edited by hand: "
            f"set it back with `tagstore check --repair`, or {RESTORE_HINT.split(' (')[0]}"
        ) from None
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
    leftovers = (tmp, Path(str(tmp) + ".wal"))
    for p in leftovers:
        p.unlink(missing_ok=True)
    try:
        with guard(store):
            con = duckdb.connect(str(tmp), config=dict(DUCKDB_CONFIG))
            try:
                con.execute(SCHEMA)
                _apply_additions(con)
                set_meta(con, "format_version", str(FORMAT_VERSION))
                for key, value in meta.items():
                    set_meta(con, key, value)
                con.execute("CHECKPOINT")
            finally:
                con.close()
    except BaseException:
        for p in leftovers:  # a half-made catalogue never stays behind (a full disk, a kill is cleaned next time)
            p.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


@contextlib.contextmanager
def transaction(store: Path) -> Iterator[Connection]:
    """A read-write connection inside one transaction: committed on success, rolled back on error."""
    con = connect(store, read_only=False)
    try:
        with guard(store):
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                with contextlib.suppress(Exception):  # a failed write may have aborted it already
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
    finally:
        with contextlib.suppress(Exception):
            con.close()


@contextlib.contextmanager
def reading(store: Path) -> Iterator[Connection]:
    """A read-only connection, closed on exit."""
    con = connect(store, read_only=True)
    try:
        with guard(store):
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
    text = get_meta(con, "generation", "0") or "0"
    try:
        return int(text)
    except ValueError:
        raise StoreDamagedError(
            f"the catalogue records generation {text!r}, not a whole number (edited by hand); "
            "run `tagstore check --repair` to reset it"
        ) from None


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

    def acquire(self, wait_s: float = 0.0) -> WriteLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise StoreDamagedError(
                f"the lock file {self.path} is a folder; remove it (rmdir {self.path}) and run the command again"
            ) from None
        except OSError as exc:
            fix = WRITE_ERRNOS.get(exc.errno or 0, f"{exc.strerror}; check the store folder")
            raise StorageError(f"cannot open the lock file {self.path}: {fix}") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StoreBusyError(
                    f"another process (pid {holder}) is writing the store {self.path.parent}; "
                    "wait for it to finish, then run the command again"
                ) from None
        with contextlib.suppress(OSError):  # the pid is a courtesy for the busy message; a full disk must not stop a writer
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
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- checks and repairs of the catalogue itself (tagstore check) ---------------------------------


def table_names() -> list[str]:
    """The tables :data:`SCHEMA` and :data:`ADDITIONS` create, in order."""
    import re

    return re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", SCHEMA + "\n".join(ADDITIONS))


def read_every_row(con: Connection) -> list[str]:
    """Read every row of every table (so DuckDB verifies each block's checksum); returns the tables missing."""
    present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    missing = [t for t in table_names() if t not in present]
    for table in table_names():
        if table in present:
            con.execute(f"SELECT count(*), bit_xor(hash(t)) FROM {table} t").fetchall()
    return missing


def schema_differences(con: Connection) -> list[str]:
    """Columns the catalogue lacks or types that differ from a fresh catalogue's (``table.column``)."""
    import duckdb

    fresh = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
    try:
        fresh.execute(SCHEMA)
        for statement in ADDITIONS:
            fresh.execute(statement)
        query = "SELECT table_name, column_name, data_type FROM information_schema.columns"
        want = {(t, c): d for t, c, d in fresh.execute(query).fetchall()}
    finally:
        fresh.close()
    have = {(t, c): d for t, c, d in con.execute(query).fetchall()}
    return [f"{t}.{c} ({'missing' if (t, c) not in have else have[(t, c)] + ' instead of ' + d})"
            for (t, c), d in want.items() if have.get((t, c)) != d]  # fmt: skip


def repair_meta(store: Path) -> list[str]:
    """Reset a hand-edited ``format_version`` or ``generation`` that is not a whole number; returns what was reset.

    The generation is set past every recorded derived file's, so they are all rebuilt.
    """
    con = _duckdb_connect(catalogue_path(store), read_only=False)
    done = []
    try:
        with guard(store):
            version = get_meta(con, "format_version")
            if version is None or not version.strip().isdigit():
                set_meta(con, "format_version", str(FORMAT_VERSION))
                done.append(f"format_version {version!r} -> {FORMAT_VERSION}")
            gen = get_meta(con, "generation", "0") or "0"
            if not gen.strip().isdigit():
                top = con.execute("SELECT coalesce(max(generation), 0) FROM index_versions").fetchone()[0]
                set_meta(con, "generation", str(int(top) + 1))
                done.append(f"generation {gen!r} -> {int(top) + 1}")
            con.execute("CHECKPOINT")
    finally:
        con.close()
    return done


def checkpoint(store: Path) -> None:
    """Fold the write-ahead log into the catalogue file (the caller holds the write lock)."""
    con = connect(store, read_only=False)
    try:
        with guard(store):
            con.execute("CHECKPOINT")
    finally:
        con.close()
