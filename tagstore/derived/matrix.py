"""A derived, memory-mapped copy of the stored embeddings for whole-catalogue passes.

Scoring every track for a tag needs every raw vector; reading 100k x 512 float32 BLOBs out of DuckDB
costs ~0.4 s of Python object churn per pass, a memory-mapped ``.npy`` file ~0.02 s. From
:data:`BF16_FROM` bytes of float32 the copy is bfloat16: at 1M x 1408 that is 2.8 GB instead of 5.6 GB, which keeps
the store folder within twice the raw vectors (benchmarks/README.md). Like the index,
the copy is derived: DuckDB stays the source of truth, the files are written atomically, recorded
(generation, count, layout digest, size, mtime) in the catalogue and rebuilt whenever the record, the
catalogue generation or the files' stat fingerprint disagree. Only writers (holding the store's write
lock) refresh it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.catalogue import records
from tagstore.catalogue import tracks as track_sql
from tagstore.fileio import atomic_write, ensure_dir, remove_stale_temps_in
from tagstore.store import Store


BF16_FROM = 1 << 30
"""From this many bytes of a float32 copy (n x dim x 4: 190k tracks at 1408-d, 524k at 512-d) the copy is
bfloat16 (half the disk and page cache of float32; 8 significant bits, so a value moves by at most 0.2% and
a score by ~1e-3 of its range); smaller stores keep exact float32, read without a decoding pass. bfloat16
keeps float32's range, so no embedding value can overflow it."""
CHUNK = 16384
"""Rows decoded at a time by :meth:`Matrix.chunks`."""


@dataclass(frozen=True)
class Matrix:
    """Every stored embedding: ids ``(n,)`` int64, the stored rows ``(n, dim)`` (read-only memmap: float32,
    or bfloat16 as uint16 high halves, see :data:`BF16_FROM`), and ``order`` = ``argsort(ids)``, for
    looking rows up by id. Read vectors with :meth:`rows` / :meth:`chunks` (always float32)."""

    ids: np.ndarray
    stored: np.ndarray
    order: np.ndarray

    @property
    def encoding(self) -> str:
        """``"float32"`` or ``"bfloat16"``."""
        return "bfloat16" if self.stored.dtype == np.uint16 else "float32"

    @property
    def vectors(self) -> np.ndarray:
        """All rows ``(n, dim)`` float32 (a decoded copy for bfloat16: for small stores and tests)."""
        return decode(self.stored) if self.encoding == "bfloat16" else self.stored

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The raw vectors ``(len(ids), dim)`` float32 of ``ids`` (all present)."""
        at = np.searchsorted(self.ids, ids, sorter=self.order)
        return decode(self.stored[self.order[at]])

    def chunks(self, select: np.ndarray | None = None, size: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids (m,), vectors (m, dim) float32)`` in file order, ``size`` rows at a time; ``select`` (n,)
        bool keeps only those rows. The vectors array is reused (or, for float32 without ``select``, a read-only
        view of the mapped file): it is valid until the next chunk."""
        buf = np.empty((min(size, len(self.ids)), self.stored.shape[1]), np.float32)
        for lo in range(0, len(self.ids), size):
            ids, block = self.ids[lo : lo + size], self.stored[lo : lo + size]
            if select is not None:
                keep = select[lo : lo + size]
                if not keep.any():
                    continue
                ids, block = ids[keep], block[keep]
            if self.encoding == "float32" and select is None:
                yield ids, block  # the mapped rows themselves (read-only): no copy
            else:
                yield ids, decode(block, buf[: len(ids)])


def encode_bf16(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` as bfloat16 bit patterns (uint16: the high half, rounded to nearest even)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def decode(block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 rows from stored rows (float32 as is; bfloat16 bits widened by a cast and a shift, ~7x
    faster than numpy's float16 -> float32 cast, which is why the copy is bfloat16 and not float16)."""
    if block.dtype != np.uint16:
        if out is None:
            return np.asarray(block, dtype=np.float32)
        np.copyto(out, block)
        return out
    out = np.empty(block.shape, np.float32) if out is None else out
    bits = out.view(np.uint32)
    np.copyto(bits, block, casting="unsafe")
    np.left_shift(bits, 16, out=bits)
    return out


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, int, str]:
    """Save atomically (:func:`tagstore.fileio.atomic_write`); returns the final (size, mtime_ns, digest)."""
    done = atomic_write(path, lambda sink: np.save(sink, array, allow_pickle=False))
    return done.size, done.mtime_ns, done.digest


def _stream_vectors(path: Path, con: cat.Connection, n: int, dim: int, bf16: bool) -> tuple[np.ndarray, tuple[int, int, str]]:
    """Write every stored vector as an ``(n, dim)`` ``.npy`` (float32, or bfloat16 bits as uint16), one
    chunk in memory at a time; returns the ids in file order and (size, mtime_ns, digest)."""
    ids: list[np.ndarray] = []

    def write(sink: Any) -> None:
        dtype = np.dtype(np.uint16 if bf16 else np.float32)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(sink, header)
        rows = 0
        for chunk_ids, raw in track_sql.iter_embeddings(con, dim):
            sink.write((encode_bf16(raw) if bf16 else np.ascontiguousarray(raw, dtype=np.float32)).tobytes())
            ids.append(chunk_ids)
            rows += len(chunk_ids)
        if rows != n:  # pragma: no cover - the caller holds the write lock, so the count cannot move
            raise RuntimeError(f"read {rows} embeddings, expected {n}")

    done = atomic_write(path, write)
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), (done.size, done.mtime_ns, done.digest)


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


def is_current(store: Store) -> bool:
    """Whether the mapped copy matches the catalogue as it is (a cheap check: record and file stats)."""
    with store.reader() as con:
        return _valid(store, records.matrix_record(con), cat.generation(con))


def matrix(store: Store, con: cat.Connection | None = None) -> Matrix:
    """All stored embeddings from the memory-mapped copy (refreshed here when stale), float32 or, from
    :data:`BF16_FROM` bytes, bfloat16 (:meth:`Matrix.rows` and :meth:`Matrix.chunks` return float32).
    A refresh streams DuckDB into the file chunk by chunk (memory: one chunk).

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
    cat.limit_memory(con)
    n = track_sql.embedding_count(con)
    folder = ensure_dir(store.cache_dir)  # recreated when someone deleted it
    remove_stale_temps_in(folder)  # a killed refresh's temp files
    stem = uuid.uuid4().hex[:12]
    fresh = {"generation": generation, "layout": store.layout.digest, "count": int(n),
             "ids": f"ids-{stem}.npy", "vectors": f"vectors-{stem}.npy"}  # fmt: skip
    bf16 = n * store.layout.dim * 4 >= BF16_FROM
    ids, stat = _stream_vectors(folder / fresh["vectors"], con, n, store.layout.dim, bf16)
    fresh["vectors_stat"], fresh["encoding"] = list(stat), "bfloat16" if bf16 else "float32"
    fresh["ids_stat"] = list(_write_npy(folder / fresh["ids"], ids))
    return None, fresh
