"""The derived vector index: build from the catalogue, keep in step with it, verify before use.

The index holds, for every stored embedding, its *index vector*: each layout block standardised with
catalogue statistics, L2-normalised and weighted so the whole has unit norm (``layout.normalise_blocks``);
inner product is then cosine similarity. The statistics (:class:`tagstore.learning.CatalogueStats`, the
one mean/std of the store) are a build parameter recorded with the index; they are refreshed by a full
rebuild when the catalogue has doubled since.

Every index file is written atomically under a new name, recorded (checksum, size, count, factory,
layout digest, catalogue generation) and then made active in one transaction; a file that no longer
matches its record is rebuilt from DuckDB, with a warning on stderr.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore import indexes
from tagstore.catalogue import records
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.records import IndexRecord, NewIndex
from tagstore.derived import bulk
from tagstore.derived.bulk import MIN_STATS_TRACKS
from tagstore.indexes import auto
from tagstore.errors import EmptyStoreError, IndexCorruptError, StoreBusyError, VectorIndexError
from tagstore.fileio import ensure_dir, remove_stale_temps_in, storage_errors
from tagstore.layout import normalise_blocks
from tagstore.learning.stats import CatalogueStats
from tagstore.store import INDEX_SPEC_KEY, MEMORY_BUDGET_KEY, Progress, Store

log = logging.getLogger("tagstore")

STATS_REFRESH_GROWTH = 2.0
"""A catalogue this many times larger than the one the statistics came from triggers a full rebuild."""
CHUNK = track_sql.CHUNK

__all__ = ["IndexRecord", "active_record", "catalogue_stats", "index_vectors", "open_index", "rebuild", "sync"]


def active_record(con: cat.Connection) -> IndexRecord | None:
    """The active index record, or None."""
    return records.active_index(con)


def catalogue_stats(con: cat.Connection, dim: int, min_tracks: int = MIN_STATS_TRACKS) -> CatalogueStats | None:
    """The catalogue's statistics over every stored embedding (one streaming pass), None below ``min_tracks``."""
    if track_sql.embedding_count(con) < max(min_tracks, 1):
        return None
    return CatalogueStats.from_chunks(raw for _, raw in track_sql.iter_embeddings(con, dim))


def index_vectors(store: Store, raw: np.ndarray, record: IndexRecord) -> np.ndarray:
    """Index vectors ``(n, dim)`` for raw stored vectors, with the statistics ``record`` was built with."""
    return normalise_blocks(raw, store.layout, record.stats_mean, record.stats_std)


def rebuild(
    store: Store, progress: Progress | None = None, spec: str | None = None, memory_budget: int | None = None
) -> IndexRecord:
    """Build a fresh index from every stored embedding (streamed in chunks), save it and make it active.

    ``spec`` is ``"auto"`` or a FAISS factory string (default: the store's); with ``spec`` or
    ``memory_budget`` given they become the store's own, recorded in the same transaction that makes the
    new index active (an atomic swap: queries see the old index or the new one). The caller holds the
    write lock.
    """
    t0 = time.perf_counter()
    spec = spec or store.factory
    budget = memory_budget or store.memory_budget
    with store.reader() as con:
        generation = cat.generation(con)
        total = track_sql.embedding_count(con)
        choice = auto.plan(total, store.layout.dim, budget) if spec == auto.AUTO else None
        built = bulk.build(store, con, choice.factory if choice else spec, choice, progress)
    built.params["spec"] = spec
    return _save_and_activate(store, built.index, generation, built.stats, total, t0, full=True,
                              params=built.params, spec=spec, memory_budget=memory_budget)  # fmt: skip


def _save_and_activate(
    store: Store, index: indexes.FaissIndex, generation: int, stats: CatalogueStats | None, stats_count: int,
    t0: float, full: bool, params: dict[str, Any], spec: str | None = None, memory_budget: int | None = None,
) -> IndexRecord:  # fmt: skip
    name = f"index-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.faiss"
    remove_stale_temps_in(ensure_dir(store.path / cat.INDEX_DIR))  # recreated when deleted; a killed save's temp removed
    try:
        info = index.save(store.index_file(name))
    except VectorIndexError as exc:  # a full disk, a file size limit: said as for every other file
        if isinstance(exc.__cause__, OSError):
            with storage_errors(store.index_file(name)):
                raise exc.__cause__ from None
        raise
    params = {**params, "build_s": round(time.perf_counter() - t0, 3), "normalisation": "block-zscore-l2", "built_on": index.compute}
    if stats is None:
        params["normalisation"] = "block-l2"
    new = NewIndex(
        file=name, factory=index.factory, dim=store.layout.dim, count=info.count, checksum=info.checksum,
        size=info.size, mtime_ns=info.mtime_ns, layout_digest=store.layout.digest, generation=generation,
        stats_count=stats_count, stats_mean=None if stats is None else stats.mean,
        stats_std=None if stats is None else stats.std, params=params,
    )  # fmt: skip
    with store.transaction() as con:
        record = records.activate_index(con, new)
        if full:
            records.clear_rebuild_flag(con)
        if spec is not None:
            cat.set_meta(con, INDEX_SPEC_KEY, spec)
        if memory_budget is not None:
            cat.set_meta(con, MEMORY_BUDGET_KEY, str(int(memory_budget)))
    if spec is not None:
        store.factory = spec
    if memory_budget is not None:
        store.memory_budget = int(memory_budget)
    _remove_stale_files(store, keep=name)
    return record


def _remove_stale_files(store: Store, keep: str) -> None:
    for path in (store.path / cat.INDEX_DIR).glob("index-*.faiss*"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def _needs_full_rebuild(con: cat.Connection, store: Store, record: IndexRecord | None) -> str | None:
    """Why an incremental update will not do, or None."""
    if record is None:
        return "no index yet"
    if records.needs_rebuild(con):
        return "tracks changed in place"
    if record.params.get("spec", record.factory) != store.factory or record.layout_digest != store.layout.digest:
        return "index parameters changed"
    count = track_sql.embedding_count(con)
    choice = record.params.get("choice")
    if store.factory == auto.AUTO and choice:
        grown = auto.outgrown(choice["family"], int(record.params.get("trained_count", record.count)), count,
                              store.layout.dim, store.memory_budget)  # fmt: skip
        if grown:
            return grown
    if record.stats_count < MIN_STATS_TRACKS <= count:
        return "enough tracks for catalogue statistics"
    if record.stats_count >= MIN_STATS_TRACKS and count >= STATS_REFRESH_GROWTH * record.stats_count:
        return "catalogue has doubled since the statistics were computed"
    return None


def _stats_of(record: IndexRecord) -> CatalogueStats | None:
    if record.stats_mean is None or record.stats_std is None:
        return None
    return CatalogueStats(record.stats_mean, record.stats_std, record.stats_count)


def is_current(store: Store) -> bool:
    """Whether the active index was built from the catalogue as it is (an empty store needs none)."""
    with store.reader() as con:
        record = records.active_index(con)
        if track_sql.embedding_count(con) == 0:
            return True
        return record is not None and record.generation == cat.generation(con)


def sync(store: Store, progress: Progress | None = None) -> IndexRecord | None:
    """Bring the index in step with the catalogue after adds/removes. The caller holds the write lock."""
    t0 = time.perf_counter()
    ensure_dir(store.path / cat.INDEX_DIR)
    with store.reader() as con:
        record = records.active_index(con)
        generation = cat.generation(con)
        if record is not None and record.generation == generation:
            return record
        reason = _needs_full_rebuild(con, store, record)
        if reason is None:
            assert record is not None
            try:
                index = indexes.load(store.index_file(record.file), expected=record)
            except IndexCorruptError as exc:
                log.warning("%s; rebuilding it from the stored embeddings", exc)
                reason = "index file did not verify"
        if reason is not None:
            con.close()
            return rebuild(store, progress)
        assert record is not None
        db_ids = track_sql.embedding_ids(con)
        idx_ids = index.ids()
        to_add = np.setdiff1d(db_ids, idx_ids)
        to_remove = np.setdiff1d(idx_ids, db_ids)
        for start in range(0, len(to_add), CHUNK):
            ids = to_add[start : start + CHUNK]
            index.add(ids, index_vectors(store, store.embeddings(ids, con), record))
    if len(to_remove):
        try:
            index.remove(to_remove)
        except VectorIndexError:
            return rebuild(store, progress)
    return _save_and_activate(store, index, generation, _stats_of(record), record.stats_count, t0, full=False,
                              params=record.params)  # fmt: skip


def _fingerprint(store: Store, record: IndexRecord) -> tuple[int, int] | None:
    try:
        st = store.index_file(record.file).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _held(store: Store, record: IndexRecord | None, generation: int) -> indexes.FaissIndex | None:
    """The index this handle loaded before, if the catalogue still points at the same unchanged file."""
    if record is None or record.generation != generation:
        return None
    if _fingerprint(store, record) != (record.size, record.mtime_ns):
        return None
    return store.held_index((record.version, record.size, record.mtime_ns))


def search_device(store: Store) -> str:
    """The device the store's searches ask for (runtime ``search_device``: ``cpu``, ``auto`` or ``cuda``)."""
    return str(store.runtime.get("search_device") or "cpu")


def open_index(store: Store) -> tuple[indexes.FaissIndex, IndexRecord]:
    """The verified active index and its record, for searching.

    A missing or corrupt file is rebuilt (warning on stderr); a stale one is brought up to date when
    no other process is writing, else used as it is with a warning.
    """
    with store.reader() as con:
        record = records.active_index(con)
        generation = cat.generation(con)
        n = track_sql.embedding_count(con)
    if n == 0:
        raise EmptyStoreError(f"the store {store.path} has no tracks yet; add some with `tagstore add PATH`")
    if (store.path / cat.INDEX_DIR).exists():
        ensure_dir(store.path / cat.INDEX_DIR)  # a file in its place: say so (a missing folder is rebuilt below)
    held = _held(store, record, generation)
    if held is not None and record is not None:
        return held, record
    problem = None
    index = None
    if record is None:
        problem = "the store has no index yet"
    else:
        try:
            index = indexes.load(store.index_file(record.file), expected=record, device=search_device(store))
        except IndexCorruptError as exc:
            problem = str(exc)
    if problem is None and record is not None and record.generation == generation:
        assert index is not None
        store.hold_index((record.version, record.size, record.mtime_ns), index)
        return index, record
    if problem is not None:
        log.warning("%s; rebuilding it from the %d stored embeddings", problem, n)
    try:
        with store.write_lock():
            fresh = rebuild(store) if problem is not None else sync(store)
    except StoreBusyError:
        if index is not None and record is not None:
            log.warning("the index is behind the catalogue while another process writes; results may miss new tracks")
            return index, record
        raise
    assert fresh is not None
    index = indexes.load(store.index_file(fresh.file), expected=fresh, device=search_device(store))
    store.hold_index((fresh.version, fresh.size, fresh.mtime_ns), index)
    return index, fresh
