"""A derived, memory-mapped copy of the stored embeddings for whole-catalogue passes.

Scoring every track for a tag needs every raw vector; reading 100k x 512 float32 BLOBs out of DuckDB
costs ~0.4 s of Python object churn per pass, a memory-mapped ``.npy`` file ~0.02 s. From
:data:`FP16_FROM` tracks the copy is float16: at 1M x 1408 that is 2.8 GB instead of 5.6 GB, which keeps
the store folder within twice the raw vectors (benchmarks/README.md). Like the index,
the copy is derived: DuckDB stays the source of truth, the files are written atomically, recorded
(generation, count, layout digest, size, mtime) in the catalogue and rebuilt whenever the record, the
catalogue generation or the files' stat fingerprint disagree. Only writers (holding the store's write
lock) refresh it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.catalogue import records
from tagstore.catalogue import tracks as track_sql
from tagstore.fileio import atomic_write
from tagstore.store import Store


@dataclass(frozen=True)
class Matrix:
    """Every stored embedding: ids ``(n,)`` int64, raw vectors ``(n, dim)`` float32 (read-only memmap) and
    ``order`` = ``argsort(ids)``, for looking rows up by id."""

    ids: np.ndarray
    vectors: np.ndarray
    order: np.ndarray

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The raw vectors ``(len(ids), dim)`` of ``ids`` (all present)."""
        at = np.searchsorted(self.ids, ids, sorter=self.order)
        return np.asarray(self.vectors[self.order[at]], dtype=np.float32)


FP16_FROM = 100_000
"""From this many tracks the copy is float16 (half the disk and page cache; scores move by ~1e-3 of their
range), unless a value does not fit float16 (|x| > 65504); smaller stores keep exact float32."""
FP16_MAX = 65504.0


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, int]:
    """Save atomically (:func:`tagstore.fileio.atomic_write`); returns the final (size, mtime_ns)."""
    done = atomic_write(path, lambda sink: np.save(sink, array, allow_pickle=False))
    return done.size, done.mtime_ns


class _TooBig(Exception):
    """A value does not fit float16."""


def _stream_vectors(path: Path, con: cat.Connection, n: int, dim: int, dtype: np.dtype) -> tuple[np.ndarray, tuple[int, int]]:
    """Write every stored vector as an ``(n, dim)`` ``.npy`` of ``dtype``, one chunk in memory at a time;
    returns the ids in file order and (size, mtime_ns). Raises _TooBig for a value float16 cannot hold."""
    ids: list[np.ndarray] = []

    def write(sink: Any) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(sink, header)
        rows = 0
        for chunk_ids, raw in track_sql.iter_embeddings(con, dim):
            if dtype == np.float16 and np.abs(raw).max(initial=0.0) > FP16_MAX:
                raise _TooBig
            sink.write(np.ascontiguousarray(raw, dtype=dtype).tobytes())
            ids.append(chunk_ids)
            rows += len(chunk_ids)
        if rows != n:  # pragma: no cover - the caller holds the write lock, so the count cannot move
            raise RuntimeError(f"read {rows} embeddings, expected {n}")

    done = atomic_write(path, write)
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), (done.size, done.mtime_ns)


def _valid(store: Store, rec: dict[str, Any] | None, generation: int) -> bool:
    if not rec or rec.get("generation") != generation or rec.get("layout") != store.layout.digest:
        return False
    for key in ("ids", "vectors"):
        try:
            st = (store.cache_dir / rec[key]).stat()
        except OSError:
            return False
        if [st.st_size, st.st_mtime_ns] != rec[f"{key}_stat"]:
            return False
    return True


def is_current(store: Store) -> bool:
    """Whether the mapped copy matches the catalogue as it is (a cheap check: record and file stats)."""
    with store.reader() as con:
        return _valid(store, records.matrix_record(con), cat.generation(con))


def matrix(store: Store) -> Matrix:
    """All stored embeddings from the memory-mapped copy (refreshed here when stale), float32 or, from
    :data:`FP16_FROM` tracks, float16 (:meth:`Matrix.rows` always returns float32).

    The refresh streams DuckDB into the file chunk by chunk (memory: one chunk). The caller holds the
    write lock.
    """
    folder = store.cache_dir
    fresh = False
    with store.reader() as con:
        generation = cat.generation(con)
        rec = records.matrix_record(con)
        if not _valid(store, rec, generation):
            fresh = True
            folder.mkdir(exist_ok=True)
            n = track_sql.embedding_count(con)
            stem = uuid.uuid4().hex[:12]
            rec = {"generation": generation, "layout": store.layout.digest, "count": int(n),
                   "ids": f"ids-{stem}.npy", "vectors": f"vectors-{stem}.npy"}  # fmt: skip
            dtype = np.dtype(np.float16 if n >= FP16_FROM else np.float32)
            try:
                ids, stat = _stream_vectors(folder / rec["vectors"], con, n, store.layout.dim, dtype)
            except _TooBig:
                dtype = np.dtype(np.float32)
                ids, stat = _stream_vectors(folder / rec["vectors"], con, n, store.layout.dim, dtype)
            rec["vectors_stat"], rec["dtype"] = list(stat), dtype.name
            rec["ids_stat"] = list(_write_npy(folder / rec["ids"], ids))
    if fresh:
        assert rec is not None
        with store.transaction() as txn:
            records.set_matrix_record(txn, rec)
        for old in folder.glob("*.npy"):
            if old.name not in (rec["ids"], rec["vectors"]):
                old.unlink(missing_ok=True)
    assert rec is not None
    ids = np.load(folder / rec["ids"])
    return Matrix(ids, np.load(folder / rec["vectors"], mmap_mode="r"), np.argsort(ids, kind="stable"))
