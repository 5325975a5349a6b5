"""A derived, memory-mapped copy of the stored embeddings for whole-catalogue passes.

Scoring every track for a tag needs every raw vector; reading 100k x 512 float32 BLOBs out of DuckDB
costs ~0.4 s of Python object churn per pass, a memory-mapped ``.npy`` file ~0.02 s. Like the index,
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
from tagstore.fileio import atomic_write, ensure_dir, remove_stale_temps_in
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


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, int, str]:
    """Save atomically (:func:`tagstore.fileio.atomic_write`); returns the final (size, mtime_ns, digest)."""
    done = atomic_write(path, lambda sink: np.save(sink, array, allow_pickle=False))
    return done.size, done.mtime_ns, done.digest


def _valid(store: Store, rec: dict[str, Any] | None, generation: int) -> bool:
    if not rec or rec.get("generation") != generation or rec.get("layout") != store.layout.digest:
        return False
    for key in ("ids", "vectors"):
        try:
            st = (store.cache_dir / rec[key]).stat()
        except OSError:
            return False
        if [st.st_size, st.st_mtime_ns] != list(rec[f"{key}_stat"])[:2]:  # (the digest is for `tagstore check`)
            return False
    return True


def matrix(store: Store, con: cat.Connection | None = None) -> Matrix:
    """All stored embeddings from the memory-mapped copy (refreshed here when stale).

    The caller holds the write lock. ``con``: a read-write connection of the caller's transaction to
    check (and, when refreshed, record) the copy with, instead of connections of its own.
    """
    if con is None:
        with store.reader() as c:
            found, fresh = _check(store, c)
        if fresh is not None:
            with store.transaction() as c:
                records.set_matrix_record(c, fresh)
    else:
        found, fresh = _check(store, con)
        if fresh is not None:
            records.set_matrix_record(con, fresh)
    if fresh is not None:  # the old files go once the new ones are recorded
        for old in store.cache_dir.glob("*.npy"):
            if old.name not in (fresh["ids"], fresh["vectors"]):
                old.unlink(missing_ok=True)
    rec = fresh or found
    assert rec is not None
    try:
        ids = np.load(store.cache_dir / rec["ids"], allow_pickle=False)
        vectors = np.load(store.cache_dir / rec["vectors"], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):  # garbled with size and mtime kept: written again from the catalogue
        if fresh is not None:
            raise
        for old in store.cache_dir.glob("*.npy"):
            old.unlink(missing_ok=True)
        return matrix(store, con)
    return Matrix(ids, vectors, np.argsort(ids, kind="stable"))


def current(store: Store, con: cat.Connection) -> Matrix | None:
    """The memory-mapped copy when it is up to date with the catalogue, else None (readers never refresh it)."""
    rec = records.matrix_record(con)
    if not _valid(store, rec, cat.generation(con)):
        return None
    assert rec is not None
    ids = np.load(store.cache_dir / rec["ids"])
    return Matrix(ids, np.load(store.cache_dir / rec["vectors"], mmap_mode="r"), np.argsort(ids, kind="stable"))


def _check(store: Store, con: cat.Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the valid record, None), or (None, the record of new files written from ``con``'s embeddings)."""
    generation = cat.generation(con)
    rec = records.matrix_record(con)
    if _valid(store, rec, generation):
        return rec, None
    parts = list(track_sql.iter_embeddings(con, store.layout.dim))
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    vecs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, store.layout.dim), np.float32)
    folder = ensure_dir(store.cache_dir)  # recreated when someone deleted it
    remove_stale_temps_in(folder)  # a killed refresh's temp files
    stem = uuid.uuid4().hex[:12]
    fresh = {"generation": generation, "layout": store.layout.digest, "count": int(len(ids)),
             "ids": f"ids-{stem}.npy", "vectors": f"vectors-{stem}.npy"}  # fmt: skip
    fresh["ids_stat"] = list(_write_npy(folder / fresh["ids"], ids))
    fresh["vectors_stat"] = list(_write_npy(folder / fresh["vectors"], vecs))
    return None, fresh
