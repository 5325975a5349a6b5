"""The bulk build of an index from every stored embedding, in two streamed passes over DuckDB.

Pass 1 reads every raw vector once for the catalogue statistics and keeps, on the way, the rows of a
seeded training sample and of the held queries (ids drawn up front from the id list, so the sample does
not depend on storage order). Pass 2 reads them again, normalises each chunk with the statistics, adds it
to the (trained) index and folds it into the exact neighbours of the held queries; the index's search
parameter is then tuned on those queries (:mod:`tagstore.indexes.auto`).

Memory: the index itself, one chunk (8,192 rows), the training sample (``train_size x dim`` float32:
225 MB for 40k x 1408) and the held queries. Never the whole matrix.

Restart after a kill: nothing half-built is kept, and the store is untouched until the new index is
swapped in (the old one keeps answering). A restart redoes the same seeded work and reaches the same
index. Checkpointing would save little: the phases' times are recorded (``read_s``, ``train_s``,
``add_s``, ``tune_s`` in the index record's params) and the bulk of a build is the two sequential reads
and the adds (benchmarks/README.md), while checkpointing partial adds would mean rewriting a growing
index file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore import indexes
from tagstore.catalogue import tracks as track_sql
from tagstore.indexes import auto
from tagstore.layout import normalise_blocks
from tagstore.learning.stats import CatalogueStats
from tagstore.store import Progress, Store

MIN_STATS_TRACKS = 20
"""Below this many tracks the index uses plain per-block L2 normalisation (no standardisation)."""
TRAIN_SEED = 0


@dataclass
class Built:
    """A built, tuned index and what to record about it (``params`` go into the index record)."""

    index: indexes.FaissIndex
    stats: CatalogueStats | None
    count: int
    params: dict[str, Any] = field(default_factory=dict)


def build(
    store: Store, con: cat.Connection, factory: str, choice: auto.Plan | None, progress: Progress | None = None
) -> Built:
    """Build ``factory`` over every stored embedding of the open catalogue ``con`` (see the module doc)."""
    dim = store.layout.dim
    cat.limit_memory(con)
    total = track_sql.embedding_count(con)
    index = indexes.create(factory, dim)
    all_ids = track_sql.embedding_ids(con) if total else np.zeros(0, np.int64)
    exact = factory == "Flat"
    nlist = index.nlist
    sample_ids = _sample_ids(all_ids, auto.train_size(nlist, total) if nlist else 100_000) \
        if not index.is_trained else np.zeros(0, np.int64)  # fmt: skip
    query_ids = np.zeros(0, np.int64) if exact else auto.held_ids(all_ids)
    wanted = np.union1d(sample_ids, query_ids)
    kept: dict[str, list[np.ndarray]] = {"ids": [], "raw": []}

    def first_pass() -> Iterator[np.ndarray]:
        done = 0
        for ids, raw in track_sql.iter_embeddings(con, dim):
            keep = np.isin(ids, wanted)
            if keep.any():
                kept["ids"].append(ids[keep])
                kept["raw"].append(raw[keep].copy())
            done += len(ids)
            if progress:
                progress(done, 2 * total, "reading")
            yield raw

    t0 = time.perf_counter()
    stats: CatalogueStats | None = None
    if total >= MIN_STATS_TRACKS:
        stats = CatalogueStats.from_chunks(first_pass())
    elif len(wanted):
        for _ in first_pass():
            pass
    mean, std = (stats.mean, stats.std) if stats else (None, None)
    held_ids = np.concatenate(kept["ids"]) if kept["ids"] else np.zeros(0, np.int64)
    held_raw = np.concatenate(kept["raw"]) if kept["raw"] else np.zeros((0, dim), np.float32)
    held = normalise_blocks(held_raw, store.layout, mean, std) if len(held_ids) else held_raw
    t1 = time.perf_counter()
    if not index.is_trained:
        index.train(held[np.isin(held_ids, sample_ids)])
    t2 = time.perf_counter()
    in_queries = np.isin(held_ids, query_ids)
    truth = auto.ExactNeighbours(held[in_queries], held_ids[in_queries])
    done = 0
    for ids, raw in track_sql.iter_embeddings(con, dim):
        vectors = normalise_blocks(raw, store.layout, mean, std)
        index.add(ids, vectors)
        truth.update(ids, vectors)
        done += len(ids)
        if progress:
            progress(total + done, 2 * total, "indexing")
    t3 = time.perf_counter()
    params: dict[str, Any] = {"choice": choice.as_dict() if choice else None, "trained_count": total,
                              "train_size": int(len(sample_ids))}  # fmt: skip
    params.update(_tune(index, truth, exact))
    params.update(read_s=round(t1 - t0, 2), train_s=round(t2 - t1, 2), add_s=round(t3 - t2, 2),
                  tune_s=round(time.perf_counter() - t3, 2))  # fmt: skip
    return Built(index, stats, total, params)


def _sample_ids(ids: np.ndarray, size: int) -> np.ndarray:
    """A seeded uniform sample of ``size`` ids (all if fewer), ascending."""
    if len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(TRAIN_SEED).choice(ids, size, replace=False))


def _tune(index: indexes.FaissIndex, truth: auto.ExactNeighbours, exact: bool) -> dict[str, Any]:
    """Tune the search parameter on the held queries; the recall measured, or exact for Flat."""
    if exact:
        return {"exact": True, "recall_at_10": None}
    out: dict[str, Any] = {"exact": False, "recall_queries": int(len(truth.query_ids))}
    if index.nlist:
        nprobe, recall = auto.tune_nprobe(index, truth)
        out.update(nprobe=nprobe, recall_at_10=round(recall, 4))
    else:  # HNSW and other explicit factories: measured as configured
        out["recall_at_10"] = round(auto.recall_at(auto.search_without_self(index, truth), truth.ids), 4)
    return out
