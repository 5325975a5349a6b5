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


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, int]:
    """Save atomically (:func:`tagstore.fileio.atomic_write`); returns the final (size, mtime_ns)."""
    done = atomic_write(path, lambda sink: np.save(sink, array, allow_pickle=False))
    return done.size, done.mtime_ns


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


def matrix(store: Store) -> Matrix:
    """All stored embeddings from the memory-mapped copy (refreshed here when stale).

    The caller holds the write lock.
    """
    with store.reader() as con:
        generation = cat.generation(con)
        rec = records.matrix_record(con)
        if not _valid(store, rec, generation):
            parts = list(track_sql.iter_embeddings(con, store.layout.dim))
            ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            vecs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, store.layout.dim), np.float32)
            rec = None
    folder = store.cache_dir
    if rec is None:
        folder.mkdir(exist_ok=True)
        stem = uuid.uuid4().hex[:12]
        rec = {"generation": generation, "layout": store.layout.digest, "count": int(len(ids)),
               "ids": f"ids-{stem}.npy", "vectors": f"vectors-{stem}.npy"}  # fmt: skip
        rec["ids_stat"] = list(_write_npy(folder / rec["ids"], ids))
        rec["vectors_stat"] = list(_write_npy(folder / rec["vectors"], vecs))
        with store.transaction() as con:
            records.set_matrix_record(con, rec)
        for old in folder.glob("*.npy"):
            if old.name not in (rec["ids"], rec["vectors"]):
                old.unlink(missing_ok=True)
    ids = np.load(folder / rec["ids"])
    return Matrix(ids, np.load(folder / rec["vectors"], mmap_mode="r"), np.argsort(ids, kind="stable"))
