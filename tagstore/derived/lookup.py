"""The id lookup: what ``query similar ID`` needs to answer without opening the catalogue.

A query by catalogue id needs the index, the query track's vector (the index holds it: Flat and HNSW
store vectors exactly) and, for the ``k`` hits, their path, title, artist, album and duration. Opening
DuckDB costs more than all the rest at 100k tracks (its import and the connection, ~0.1 s), so writers
keep a derived copy of those hit facts in ``lookup/``: ids ``(n,)`` int64 ascending (``.npy``, memory-
mapped), byte offsets ``(n + 1,)`` int64 and one JSON array per track concatenated (``.bin``), read
with a binary search and one ``pread``. Like the index, the files are written atomically, recorded in
the catalogue (generation, count, stat of each file) and rebuilt when the generation moves.

The catalogue cannot be asked without opening it, so the writer also leaves ``lookup/stamp.json``
(atomically, as the last step of every write command, holding the write lock): the catalogue file's
stat (inode, size, mtime, ctime, and its WAL's) as it was when the record and the active index were
read, with both. Every commit changes that stat (DuckDB writes a WAL and checkpoints on close; read-only
connections change nothing), so :func:`similar_by_id` trusts the files only while the stat is exactly
the stamped one, and otherwise returns None: the caller opens the store as before. A stale stamp costs
one slow query, never a wrong answer.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagstore import catalogue as cat
from tagstore import indexes
from tagstore.catalogue import records
from tagstore.catalogue import tracks as track_sql
from tagstore.errors import IndexCorruptError, VectorIndexError
from tagstore.fileio import atomic_write

if TYPE_CHECKING:  # the query path does not need the store handle's module
    from tagstore.store import Store

__all__ = ["LOOKUP_DIR", "STAMP_FILE", "catalogue_state", "refresh", "similar_by_id"]

LOOKUP_DIR = "lookup"
STAMP_FILE = "stamp.json"


def catalogue_state(store: Path) -> list[Any]:
    """What every commit to the catalogue changes: ``[inode, size, mtime_ns, ctime_ns, WAL [size, mtime_ns] or None]``."""
    main = cat.catalogue_path(store)
    st = os.stat(main)
    try:
        wal = os.stat(main.with_name(main.name + ".wal"))
        wal_state: list[int] | None = [wal.st_size, wal.st_mtime_ns]
    except FileNotFoundError:
        wal_state = None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, wal_state]


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _files_valid(folder: Path, rec: dict[str, Any] | None) -> bool:
    return bool(rec) and all(_stat(folder / rec[key]) == rec[f"{key}_stat"] for key in ("ids", "offsets", "meta"))


def _write_files(folder: Path, con: cat.Connection, generation: int) -> dict[str, Any]:
    ids: list[int] = []
    parts: list[bytes] = []
    for rows in track_sql.iter_summaries(con):
        for tid, path, title, artist, album, duration in rows:
            ids.append(tid)
            parts.append(json.dumps([path, title, artist, album, duration], ensure_ascii=False).encode())
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    stem = uuid.uuid4().hex[:12]
    rec: dict[str, Any] = {"generation": generation, "count": len(ids), "ids": f"ids-{stem}.npy",
                           "offsets": f"offsets-{stem}.npy", "meta": f"meta-{stem}.bin"}  # fmt: skip
    id_array = np.asarray(ids, dtype=np.int64)
    for key, array in (("ids", id_array), ("offsets", offsets)):
        done = atomic_write(folder / rec[key], lambda sink, a=array: np.save(sink, a, allow_pickle=False))
        rec[f"{key}_stat"] = [done.size, done.mtime_ns]
    done = atomic_write(folder / rec["meta"], b"".join(parts))
    rec["meta_stat"] = [done.size, done.mtime_ns]
    return rec


def refresh(store: Store) -> dict[str, Any]:
    """Bring the lookup files in step with the catalogue and stamp them; returns the stamp.

    The caller holds the write lock, and calls this after its last commit (a later commit makes the
    stamp stale, which is safe).
    """
    folder = store.path / LOOKUP_DIR
    folder.mkdir(exist_ok=True)
    with store.reader() as con:
        generation = cat.generation(con)
        rec = records.lookup_record(con)
        fresh = None
        if not (rec and rec.get("generation") == generation and _files_valid(folder, rec)):
            fresh = _write_files(folder, con, generation)
    if fresh is not None:
        with store.transaction() as con:
            records.set_lookup_record(con, fresh)
        rec = fresh
        keep = {rec["ids"], rec["offsets"], rec["meta"], STAMP_FILE}
        for old in folder.iterdir():
            if old.name not in keep and not old.name.startswith("."):
                old.unlink(missing_ok=True)
    with store.reader() as con:  # read what is now recorded, then the stat that goes with it
        index = records.active_index(con)
        generation = cat.generation(con)
        rec = records.lookup_record(con)
    state = catalogue_state(store.path)
    current = index is not None and index.generation == generation
    stamp = {
        "catalogue": state, "generation": generation, "lookup": rec,
        "index": {"file": index.file, "factory": index.factory, "checksum": index.checksum, "size": index.size,
                  "mtime_ns": index.mtime_ns, "count": index.count, "dim": index.dim, "version": index.version}
        if current and index is not None else None,
    }  # fmt: skip
    atomic_write(folder / STAMP_FILE, json.dumps(stamp))
    return stamp


def similar_by_id(store: Path, track_id: int, k: int = 10, text: str | None = None) -> dict[str, Any] | None:
    """The ``k`` tracks most similar to the stored track ``track_id``, from the index and the lookup alone,
    as the JSON of ``query similar --json``: ``{"query": {text, id, path}, "results": [hit, ...]}``.

    None when the answer cannot be given this way: no stamp, a stamp older than the catalogue, an index
    or lookup file that does not match its record, an id not in the lookup, or an index that does not
    hold its vectors exactly (IVF, PQ, SQ); the caller then opens the store (which also gives the
    proper error for an unknown id). Scores equal :func:`tagstore.api.similar`'s to float32 rounding.
    """
    folder = Path(store) / LOOKUP_DIR
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
        if stamp["catalogue"] != catalogue_state(Path(store)) or not stamp["index"] or k < 1:
            return None
        rec, idx = stamp["lookup"], stamp["index"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _exact(str(idx.get("factory") or "")):
        return None  # an index that does not hold its vectors exactly: the catalogue answers (not worth loading)
    if not _files_valid(folder, rec):
        return None
    ids = np.load(folder / rec["ids"], mmap_mode="r")
    pos = int(np.searchsorted(ids, track_id))
    if pos >= len(ids) or int(ids[pos]) != track_id:
        return None
    path = Path(store) / cat.INDEX_DIR / idx["file"]
    info = indexes.IndexFileInfo(path, idx["checksum"], idx["size"], idx["mtime_ns"], idx["count"], idx["dim"], idx["factory"])
    try:
        index = indexes.load(path, expected=info, prefetch=not resident(path))
        vec = index.reconstruct(track_id)[None, :]
        k = min(k, max(int(index.ntotal) - 1, 1))  # never more results than other tracks (memory follows k)
        scores, found = index.search(vec, k, exclude_ids=np.asarray([track_id], dtype=np.int64))
    except (IndexCorruptError, VectorIndexError, KeyError):
        return None
    offsets = np.load(folder / rec["offsets"], mmap_mode="r")
    hit_ids = found[0][found[0] >= 0]
    wanted = [pos] + [int(p) for p in np.searchsorted(ids, hit_ids)]
    if any(p >= len(ids) for p in wanted) or not np.array_equal(ids[wanted[1:]], hit_ids):
        return None  # the index holds an id the lookup lacks: let the catalogue answer
    with open(folder / rec["meta"], "rb", buffering=0) as fh:
        facts = [json.loads(os.pread(fh.fileno(), int(offsets[p + 1] - offsets[p]), int(offsets[p]))) for p in wanted]
    results = [
        {"rank": rank, "id": int(tid), "path": f[0], "title": f[1], "artist": f[2], "album": f[3],
         "duration_s": f[4], "score": float(score)}
        for rank, (tid, score, f) in enumerate(zip(hit_ids, scores[0], facts[1:]), start=1)
    ]  # fmt: skip
    return {"query": {"text": text if text is not None else str(track_id), "id": track_id, "path": facts[0][0]},
            "results": results}  # fmt: skip


def resident(path: Path, enough: float = 0.98) -> bool:
    """Whether the file's pages are (nearly all) in the page cache (Linux ``mincore``; False elsewhere).

    :func:`tagstore.indexes.load` reads a mapped index once before use, because FAISS maps it for
    random access and a cold file would be faulted in page by page (8 s instead of 1 s at 206 MB); when
    the file is already cached that read is pure cost (0.05-0.3 s), so it is skipped then.
    """
    import ctypes
    import mmap

    try:
        size = os.path.getsize(path)
        if size == 0:
            return True
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return False
            try:
                if libc.mincore(addr, size, vec) != 0:
                    return False
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
        return np.count_nonzero(np.frombuffer(vec.raw, dtype=np.uint8) & 1) >= enough * pages
    except (OSError, AttributeError, TypeError):
        return False


EXACT = re.compile(r"Flat|HNSW\d+(,Flat)?|IVF\d+(_HNSW\d+)?,Flat")
"""Factories whose stored vectors come back exactly (IVF ones only with a direct map, else reconstruct fails)."""


def _exact(factory: str) -> bool:
    """Whether an index of ``factory`` returns stored vectors exactly (so a reconstructed query equals the stored one)."""
    return EXACT.fullmatch(factory.replace(" ", "")) is not None
