"""`tagstore check`: find what is wrong with a store, by name; and `tagstore backup`: a consistent copy.

:func:`inspect` reads everything and changes nothing: the catalogue (every block read, so DuckDB verifies
its checksums; schema, format version, layout; every embedding's size and finiteness; rows that point
at nothing; a score of every learned tag for every track; pending post-commit work), the index (the
file's full checksum, its count, its ids = the catalogue's), the vector cache (its recorded digests)
and temp files killed writers left. Each finding is a :class:`Problem` with a stable ``kind`` and
whether ``tagstore check --repair`` (:func:`tagstore.api.check`) can fix it from the catalogue.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.catalogue import pending, records
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.errors import (
    IndexCorruptError,
    StorageError,
    StoreCorruptError,
    StoreDamagedError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
)
from tagstore.fileio import atomic_write, file_hash, stale_temps_in, storage_errors
from tagstore.store import Store

__all__ = ["CheckReport", "Problem", "backup", "inspect", "stale_temps"]


@dataclass
class Problem:
    """One finding: ``kind`` (e.g. ``index-missing``), a one-line ``message``, and whether repair can fix it."""

    kind: str
    message: str
    fixable: bool
    ids: list[int] = field(default_factory=list)


@dataclass
class CheckReport:
    """What :func:`inspect` found (and, after a repair, what was done)."""

    store: str
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def add(self, kind: str, message: str, fixable: bool, ids: list[int] | None = None) -> None:
        self.problems.append(Problem(kind, message, fixable, list(ids or [])))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def inspect(path: str | os.PathLike[str]) -> CheckReport:
    """Check the store at ``path`` (see the module docstring); never raises for what it finds."""
    path = Path(path).expanduser().absolute()
    report = CheckReport(str(path))
    try:
        store = Store.open(path)
    except StoreCorruptError as exc:
        report.add("catalogue-corrupt", str(exc), False)
        return report
    except StoreDamagedError as exc:
        fixable = "format version" in str(exc) or "generation" in str(exc)
        report.add("catalogue-values", str(exc), fixable)
        return report
    except StoreFormatError as exc:
        report.add("catalogue-format", str(exc), False)
        return report
    try:
        _check_catalogue(store, report)
        if not any(kind.startswith("catalogue-") for kind in report.kinds()):
            _check_index(store, report)
            _check_cache(store, report)
        for tmp in stale_temps(store):
            report.add("stale-temp", f"temp file {tmp} was left by a killed writer", True)
    finally:
        store.close()
    return report


def _check_catalogue(store: Store, report: CheckReport) -> None:
    try:
        with cat.reading(store.path) as con:
            missing = cat.read_every_row(con)
            if missing:
                report.add("catalogue-schema", f"the catalogue lacks the table(s) {', '.join(missing)}; "
                           f"{cat.RESTORE_HINT.split(' (')[0]}", False)  # fmt: skip
                return
            diffs = cat.schema_differences(con)
            if diffs:
                report.add("catalogue-schema", f"the catalogue's columns differ from tagstore's: {', '.join(diffs[:5])}; "
                           f"{cat.RESTORE_HINT.split(' (')[0]}", False)  # fmt: skip
                return
            cat.generation(con)  # a value that is not a number raises StoreDamagedError
            report.counts = cat.counts(con)
            bad = track_sql.bad_embeddings(con, store.layout.dim)
            for tid, what in bad:
                report.add("bad-embedding", f"the stored embedding of track {tid} has {what}; repair re-embeds it "
                           f"from its file (or `tagstore remove {tid}`)", True, [tid])  # fmt: skip
            for what, n in track_sql.orphans(con).items():
                fixable = track_sql.ORPHANS[what] is not None
                report.add("orphan-rows", f"{n} {what}" + ("" if fixable else "; remove them with `tagstore remove`"),
                           fixable)  # fmt: skip
            learned = [tid for tid, _, _ in tag_sql.learned_models(con)]
            if learned and not bad:
                missing_ids = tag_sql.missing_scores(con, learned)
                if len(missing_ids):
                    report.add("missing-scores", f"{len(missing_ids)} track(s) lack a score for a learned tag "
                               f"(e.g. track {int(missing_ids[0])}); repair scores them", True)  # fmt: skip
            for task in pending.tasks(con):
                report.add("pending-work", f"post-commit work {task!r} was interrupted; repair (or any writing "
                           "command) completes it", True)  # fmt: skip
    except StoreCorruptError as exc:
        report.add("catalogue-corrupt", str(exc), False)
    except StoreDamagedError as exc:
        report.add("catalogue-values", str(exc), "generation" in str(exc))


def _check_index(store: Store, report: CheckReport) -> None:
    from tagstore import indexes
    from tagstore.indexes.files import verify

    folder = store.path / cat.INDEX_DIR
    if folder.exists() and not folder.is_dir():
        report.add("index-folder", f"{folder} is a file, not the index folder; move it away, then repair", False)
        return
    with cat.reading(store.path) as con:
        record = records.active_index(con)
        generation = cat.generation(con)
        n = track_sql.embedding_count(con)
        db_ids = track_sql.embedding_ids(con)
    if n == 0 and record is None:
        return
    if record is None:
        report.add("index-missing", "the store has no index yet; repair builds it", True)
        return
    file = store.index_file(record.file)
    try:
        verify(file, record, full=True)
        index = indexes.load(file, expected=record, prefetch=False)
    except IndexCorruptError as exc:
        kind = "index-missing" if "missing" in str(exc) else "index-corrupt"
        report.add(kind, str(exc).replace("run `tagstore rebuild`", "repair rebuilds it"), True)
        return
    if record.generation != generation:
        report.add("index-behind", f"the index (generation {record.generation}) is behind the catalogue "
                   f"({generation}); repair (or the next query) brings it up to date", True)  # fmt: skip
    elif not np.array_equal(np.sort(index.ids()), db_ids):
        report.add("index-ids", f"the index holds {index.ntotal} ids, not the catalogue's {n}; repair rebuilds it", True)


def _check_cache(store: Store, report: CheckReport) -> None:
    folder = store.cache_dir
    if folder.exists() and not folder.is_dir():
        report.add("cache-folder", f"{folder} is a file, not the cache folder; move it away", False)
        return
    with cat.reading(store.path) as con:
        rec = records.matrix_record(con)
    if not rec:
        return
    for key in ("ids", "vectors"):
        stat = list(rec.get(f"{key}_stat") or [])
        file = folder / str(rec.get(key))
        if not file.is_file():
            continue  # a missing cache is rebuilt when next needed: not a fault
        if len(stat) > 2 and file_hash(file) != stat[2]:
            report.add("cache-corrupt", f"the vector cache file {file} does not match its recorded checksum; "
                       "repair deletes it (it is rebuilt from the catalogue)", True)  # fmt: skip


def stale_temps(store: Store) -> list[Path]:
    """Temp files of writers that are gone: atomic-write temps in the derived folders, a half-made catalogue."""
    from tagstore.derived.lookup import LOOKUP_DIR

    found = []
    for folder in (store.path, store.path / cat.INDEX_DIR, store.cache_dir, store.path / LOOKUP_DIR):
        if folder.is_dir():
            found += stale_temps_in(folder)
    init = cat.catalogue_path(store.path).with_name(cat.CATALOGUE_FILE + ".init")
    if init.exists():
        found.append(init)
    return found


def backup(store: Store, dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy the catalogue, checkpointed under the write lock, into a new store folder ``dest``.

    ``dest`` must not exist, or be an empty folder. The copy is a complete store (derived files are rebuilt
    from it when first needed): restore by pointing ``--store`` at it, or moving it into place. The copy is
    opened and every row read before this returns.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreExistsError(f"{dest} exists and is not an empty folder; give a new folder for the backup")
    if dest == store.path or store.path in dest.parents:
        raise StoreError(f"the backup {dest} would be inside the store {store.path}; choose a folder outside it")
    source = cat.catalogue_path(store.path)
    with store.write_lock(), storage_errors(dest):
        cat.checkpoint(store.path)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / cat.INDEX_DIR).mkdir(exist_ok=True)
        with open(source, "rb") as fh:
            written = atomic_write(cat.catalogue_path(dest), lambda sink: shutil.copyfileobj(fh, sink))
        with cat.reading(store.path) as con:
            record = records.active_index(con)
        index_file = store.index_file(record.file) if record is not None else None
        if index_file is not None and index_file.is_file():  # derived, but saves a rebuild after a restore
            with open(index_file, "rb") as fh:
                atomic_write(dest / cat.INDEX_DIR / index_file.name, lambda sink: shutil.copyfileobj(fh, sink))
    try:
        with cat.reading(dest) as con:
            cat.read_every_row(con)
            counts = cat.counts(con)
    except StoreError as exc:
        raise StorageError(f"the backup {dest} does not read back ({exc}); check the disk and try again") from exc
    return {"dest": str(dest), "bytes": written.size, "checksum": written.digest, "counts": counts}
