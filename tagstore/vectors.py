"""The derived vector index: build from the catalogue, keep in step with it, verify before use.

The index holds, for every stored embedding, its *index vector*: each layout block standardised with
catalogue statistics, L2-normalised and weighted so the whole has unit norm (``layout.normalise_blocks``);
inner product is then cosine similarity. The statistics are a build parameter recorded with the index
(``index_versions``); they are refreshed by a full rebuild when the catalogue has doubled since.

Every index file is written atomically under a new name, recorded (checksum, size, count, factory,
layout digest, catalogue generation) and then made active in one transaction; a file that no longer
matches its record is rebuilt from DuckDB, with a warning on stderr.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.errors import EmptyStoreError, IndexCorruptError, StoreBusyError, VectorIndexError
from tagstore.layout import normalise_blocks

log = logging.getLogger("tagstore")

MIN_STATS_TRACKS = 20
"""Below this many tracks the index uses plain per-block L2 normalisation (no standardisation)."""
STATS_REFRESH_GROWTH = 2.0
"""A catalogue this many times larger than the one the statistics came from triggers a full rebuild."""
CHUNK = 8192

RECORD_COLUMNS = (
    "version", "file", "factory", "metric", "dim", "count", "checksum", "size_bytes", "mtime_ns",
    "layout_digest", "generation", "stats_count", "stats_mean", "stats_std", "params", "built_at",
)  # fmt: skip


def active_record(con: Any) -> dict[str, Any] | None:
    """The active ``index_versions`` row as a dict (stats decoded to arrays), or None."""
    row = con.execute(
        f"SELECT {', '.join(RECORD_COLUMNS)} FROM index_versions WHERE active ORDER BY version DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    rec = dict(zip(RECORD_COLUMNS, row))
    for key in ("stats_mean", "stats_std"):
        rec[key] = np.frombuffer(rec[key], dtype=np.float32).copy() if rec[key] is not None else None
    rec["params"] = json.loads(rec["params"])
    return rec


def iter_embeddings(con: Any, dim: int, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stored embeddings, ``chunk`` at a time: ``(ids (m,) int64, raw (m, dim) float32)``.

    In storage order (no ORDER BY: sorting 2 KB rows costs more than the rest of the read).
    """
    cur = con.execute("SELECT track_id, vector FROM embeddings")
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        raw = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        yield ids, raw


def compute_stats(con: Any, dim: int) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """Per-dimension mean and std ``(dim,)`` over all stored embeddings (one streaming pass, float64)."""
    n, s, ss = 0, np.zeros(dim), np.zeros(dim)
    for _, raw in iter_embeddings(con, dim):
        x = raw.astype(np.float64)
        n += x.shape[0]
        s += x.sum(axis=0)
        ss += np.square(x).sum(axis=0)
    if n < MIN_STATS_TRACKS:
        return None, None, n
    mean = s / n
    var = np.maximum(ss / n - mean**2, 0.0)
    # Constant dimensions would divide by ~0: a floor relative to the typical variance keeps them inert.
    std = np.sqrt(var + 1e-4 * float(var.mean()) + 1e-12)
    return mean.astype(np.float32), std.astype(np.float32), n


def index_vectors(store: Any, raw: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Index vectors ``(n, dim)`` for raw stored vectors, with the statistics ``record`` was built with."""
    return normalise_blocks(raw, store.layout, record["stats_mean"], record["stats_std"])


def _index_file(store: Any, name: str) -> Path:
    return store.path / cat.INDEX_DIR / name


def rebuild(store: Any, progress: Any = None, lock: bool = True) -> dict[str, Any]:
    """Build a fresh index from every stored embedding (streamed in chunks), save it and make it active."""
    if lock:
        with store.write_lock():
            return rebuild(store, progress, lock=False)
    from tagstore import indexes

    t0 = time.perf_counter()
    with cat.reading(store.path) as con:
        generation = int(cat.get_meta(con, "generation", "0") or 0)
        total = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        mean, std, stats_count = compute_stats(con, store.layout.dim)
        record = {"stats_mean": mean, "stats_std": std}

        class Chunks:
            """Re-iterable (IVF training takes a first pass): each pass re-runs the query."""

            def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
                done = 0
                for ids, raw in iter_embeddings(con, store.layout.dim):
                    yield ids, index_vectors(store, raw, record)
                    done += len(ids)
                    if progress:
                        progress(done, total, "indexing")

        index = indexes.build(Chunks(), store.factory, store.layout.dim)
    new = _save_and_activate(store, index, generation, mean, std, stats_count, t0)
    _clear_flag(store)
    return new


def _save_and_activate(
    store: Any,
    index: Any,
    generation: int,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    stats_count: int,
    t0: float,
) -> dict[str, Any]:
    name = f"index-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.faiss"
    info = index.save(_index_file(store, name))
    params = {"build_s": round(time.perf_counter() - t0, 3), "normalisation": "block-zscore-l2"}
    if stats_count < MIN_STATS_TRACKS:
        params["normalisation"] = "block-l2"
    with cat.transaction(store.path) as con:
        con.execute("UPDATE index_versions SET active = false WHERE active")
        con.execute(
            """INSERT INTO index_versions (file, factory, metric, dim, count, checksum, size_bytes, mtime_ns,
                   layout_digest, generation, stats_count, stats_mean, stats_std, params, active)
               VALUES (?, ?, 'ip', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, true)""",
            [
                name, store.factory, store.layout.dim, info.count, info.checksum, info.size, info.mtime_ns,
                store.layout.digest, generation, stats_count,
                None if mean is None else mean.tobytes(), None if std is None else std.tobytes(),
                json.dumps(params),
            ],
        )  # fmt: skip
        record = active_record(con)
    _remove_stale_files(store, keep=name)
    assert record is not None
    return record


def _remove_stale_files(store: Any, keep: str) -> None:
    for path in (store.path / cat.INDEX_DIR).glob("index-*.faiss*"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def _clear_flag(store: Any) -> None:
    with cat.transaction(store.path) as con:
        cat.set_meta(con, "index_needs_rebuild", "0")


def _needs_full_rebuild(con: Any, store: Any, record: dict[str, Any] | None) -> str | None:
    """Why an incremental update will not do, or None."""
    if record is None:
        return "no index yet"
    if cat.get_meta(con, "index_needs_rebuild", "0") == "1":
        return "tracks changed in place"
    if record["factory"] != store.factory or record["layout_digest"] != store.layout.digest:
        return "index parameters changed"
    count = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    if record["stats_count"] < MIN_STATS_TRACKS <= count:
        return "enough tracks for catalogue statistics"
    if record["stats_count"] >= MIN_STATS_TRACKS and count >= STATS_REFRESH_GROWTH * record["stats_count"]:
        return "catalogue has doubled since the statistics were computed"
    return None


def sync(store: Any, progress: Any = None) -> dict[str, Any] | None:
    """Bring the index in step with the catalogue after adds/removes. The caller holds the write lock."""
    from tagstore import indexes

    t0 = time.perf_counter()
    with cat.reading(store.path) as con:
        record = active_record(con)
        generation = int(cat.get_meta(con, "generation", "0") or 0)
        if record is not None and record["generation"] == generation:
            return record
        reason = _needs_full_rebuild(con, store, record)
        if reason is None:
            try:
                index = indexes.load(_index_file(store, record["file"]), expected=_expected(record))
            except IndexCorruptError as exc:
                log.warning("%s; rebuilding it from the stored embeddings", exc)
                reason = "index file did not verify"
        if reason is not None:
            con.close()
            return rebuild(store, progress, lock=False)
        db_ids = np.array([r[0] for r in con.execute("SELECT track_id FROM embeddings").fetchall()], dtype=np.int64)
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
            return rebuild(store, progress, lock=False)
    return _save_and_activate(
        store, index, generation, record["stats_mean"], record["stats_std"], record["stats_count"], t0
    )


def _expected(record: dict[str, Any]) -> Any:
    from tagstore import indexes

    return indexes.IndexFileInfo(
        path=record["file"],
        checksum=record["checksum"],
        size=record["size_bytes"],
        mtime_ns=record["mtime_ns"],
        count=record["count"],
        dim=record["dim"],
        factory=record["factory"],
    )


def open_index(store: Any) -> tuple[Any, dict[str, Any]]:
    """The verified active index and its record, for searching.

    A missing or corrupt file is rebuilt (warning on stderr); a stale one is brought up to date when
    no other process is writing, else used as it is with a warning.
    """
    from tagstore import indexes

    with store.reader() as con:
        record = active_record(con)
        generation = int(cat.get_meta(con, "generation", "0") or 0)
        n = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    if n == 0:
        raise EmptyStoreError(f"the store {store.path} has no tracks yet; add some with `tagstore add PATH`")
    cached = _cached(store, record, generation)
    if cached is not None:
        return cached, record
    problem = None
    index = None
    if record is None:
        problem = "the store has no index yet"
    else:
        try:
            index = indexes.load(_index_file(store, record["file"]), expected=_expected(record))
        except IndexCorruptError as exc:
            problem = str(exc)
    if problem is None and record is not None and record["generation"] == generation:
        _remember(store, record, index)
        return index, record
    if problem is not None:
        log.warning("%s; rebuilding it from the %d stored embeddings", problem, n)
    try:
        with store.write_lock():
            record = rebuild(store, lock=False) if problem is not None else sync(store)
    except StoreBusyError:
        if index is not None and record is not None:
            log.warning("the index is behind the catalogue while another process writes; results may miss new tracks")
            return index, record
        raise
    assert record is not None
    index = indexes.load(_index_file(store, record["file"]), expected=_expected(record))
    _remember(store, record, index)
    return index, record


def _fingerprint(store: Any, record: dict[str, Any]) -> tuple[int, int] | None:
    try:
        st = _index_file(store, record["file"]).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _remember(store: Any, record: dict[str, Any], index: Any) -> None:
    """Keep the loaded index on the store object, so repeated queries in one process do not reload it."""
    store._loaded_index = (record["version"], _fingerprint(store, record), index)


def _cached(store: Any, record: dict[str, Any] | None, generation: int) -> Any | None:
    """The index this store object loaded before, if the catalogue still points at the same unchanged file."""
    held = getattr(store, "_loaded_index", None)
    if held is None or record is None or record["generation"] != generation or held[0] != record["version"]:
        return None
    return held[2] if held[1] == _fingerprint(store, record) == (record["size_bytes"], record["mtime_ns"]) else None
