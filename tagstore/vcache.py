"""A derived, memory-mapped copy of the stored embeddings for whole-catalogue passes.

Scoring every track for a tag needs every raw vector; reading 100k x 512 float32 BLOBs out of DuckDB
costs ~0.4 s of Python object churn per pass, a memory-mapped ``.npy`` file ~0.02 s. Like the index,
the copy is derived: DuckDB stays the source of truth, the files are written atomically, recorded
(generation, count, layout digest, size, mtime) in the catalogue's ``meta`` table and rebuilt whenever
the record, the catalogue generation or the files' stat fingerprint disagree. Only writers (holding the
store's write lock) refresh it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat

log = logging.getLogger("tagstore")
CACHE_DIR = "cache"
META_KEY = "vector_cache"


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, int]:
    """Save atomically (temp file, fsync, rename); returns the final (size, mtime_ns)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _valid(store: Any, rec: dict[str, Any] | None, generation: int) -> bool:
    if not rec or rec.get("generation") != generation or rec.get("layout") != store.layout.digest:
        return False
    for key in ("ids", "vectors"):
        try:
            st = (store.path / CACHE_DIR / rec[key]).stat()
        except OSError:
            return False
        if [st.st_size, st.st_mtime_ns] != rec[f"{key}_stat"]:
            return False
    return True


def matrix(store: Any) -> tuple[np.ndarray, np.ndarray]:
    """All stored embeddings: ids ``(n,)`` int64 and raw vectors ``(n, dim)`` float32 (read-only memmap).

    The caller holds the write lock (the copy is refreshed here when stale).
    """
    from tagstore.vectors import iter_embeddings

    with cat.reading(store.path) as con:
        generation = int(cat.get_meta(con, "generation", "0") or 0)
        text = cat.get_meta(con, META_KEY)
        rec = json.loads(text) if text else None
        if not _valid(store, rec, generation):
            parts = list(iter_embeddings(con, store.layout.dim))
            ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            vecs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, store.layout.dim), np.float32)
            rec = None
    if rec is None:
        folder = store.path / CACHE_DIR
        folder.mkdir(exist_ok=True)
        stem = uuid.uuid4().hex[:12]
        rec = {"generation": generation, "layout": store.layout.digest, "count": int(len(ids)),
               "ids": f"ids-{stem}.npy", "vectors": f"vectors-{stem}.npy"}  # fmt: skip
        rec["ids_stat"] = list(_write_npy(folder / rec["ids"], ids))
        rec["vectors_stat"] = list(_write_npy(folder / rec["vectors"], vecs))
        with cat.transaction(store.path) as con:
            cat.set_meta(con, META_KEY, json.dumps(rec))
        for old in folder.glob("*.npy"):
            if old.name not in (rec["ids"], rec["vectors"]):
                old.unlink(missing_ok=True)
    folder = store.path / CACHE_DIR
    return np.load(folder / rec["ids"]), np.load(folder / rec["vectors"], mmap_mode="r")
