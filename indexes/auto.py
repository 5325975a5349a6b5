"""``auto``: the index chosen by catalogue size, dimension and a memory budget, and tuned by measurement.

The rule (numbers from ``benchmarks/bench_scale.py``; see benchmarks/README.md):

* **Flat** (exact) while one query scans at most :data:`FLAT_MAX_CELLS` floats (``n * dim``; ~0.2 s on
  2 cores at the limit) and the vectors fit the memory budget (``4 * n * dim`` bytes).
* Beyond that **IVF{nlist},SQ8**: ``nlist`` the power of two nearest ``sqrt(n)`` (1024 at 1M tracks),
  a flat coarse quantizer (at these ``nlist`` the quantizer costs under 2% of a query, so an HNSW one buys
  nothing), 8-bit scalar codes (``n * dim`` bytes: a quarter of Flat). When even SQ8 does not fit the
  budget, product quantization ``PQ{m}`` with the largest ``m`` dividing ``dim`` that fits.
* IVF indexes are trained on a seeded uniform sample of :func:`train_size` vectors, and their ``nprobe``
  is tuned after the adds (:func:`tune_nprobe`): the smallest power of two whose recall@10 against exact
  search, on a seeded held sample of stored tracks as queries (each query's own id left out, as in
  ``query similar ID``), reaches :data:`TARGET_RECALL`.

The caller records the :class:`Plan`, the measured recall and the tuned ``nprobe`` with the index; a
store re-plans when the catalogue outgrew what the index was trained for (:func:`outgrown`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tagstore.errors import InputError

__all__ = [
    "AUTO", "FLAT_MAX_CELLS", "Plan", "TARGET_RECALL", "ExactNeighbours", "default_memory_budget", "held_ids",
    "outgrown", "parse_size", "plan", "recall_at", "search_without_self", "train_size", "tune_nprobe",
]  # fmt: skip

AUTO = "auto"
FLAT_MAX_CELLS = 2.0e8
"""Largest ``n * dim`` searched exactly (Flat): 142k tracks at 1408-d, 390k at 512-d."""
TARGET_RECALL = 0.95
"""recall@10 an IVF index is tuned to reach against exact search."""
RETRAIN_GROWTH = 2.0
"""An IVF index trained on n vectors is re-planned and re-trained once the catalogue holds this many times n."""
MEMORY_FRACTION = 0.5
"""Default memory budget for the index: this fraction of the machine's physical memory."""
HELD_QUERIES = 200
"""Stored tracks used as queries to measure recall (seeded)."""
K = 10


@dataclass(frozen=True)
class Plan:
    """What ``auto`` chose for ``n`` vectors of ``dim``: the FAISS ``factory``, its ``family``
    (``"flat"`` or ``"ivf"``), ``nlist`` (0 for Flat), the ``memory_budget`` in bytes it was held to and
    the ``reason`` in words."""

    factory: str
    family: str
    nlist: int
    n: int
    dim: int
    memory_budget: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_memory_budget() -> int:
    """:data:`MEMORY_FRACTION` of physical memory, in bytes."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux/macOS
        total = 8 << 30
    return int(total * MEMORY_FRACTION)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40}  # fmt: skip


def parse_size(text: str | int) -> int:
    """Bytes from ``"8GB"``, ``"512MB"``, ``"2g"`` or a plain number (binary units); InputError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise InputError(f"--memory-budget {text!r} is not a size; write it like 8GB, 512MB or 2000000000")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise InputError(f"--memory-budget must be more than 0 bytes, got {text!r}")
    return size


def _nlist(n: int) -> int:
    """The power of two nearest sqrt(n), at least 4, with at least 39 training vectors per list."""
    nlist = 2 ** max(2, round(math.log2(max(n, 1)) / 2))
    while nlist > 4 and nlist * 39 > n:
        nlist //= 2
    return nlist


def plan(n: int, dim: int, memory_budget: int | None = None, flat_max_cells: float | None = None) -> Plan:
    """The index ``auto`` builds for ``n`` vectors of ``dim`` within ``memory_budget`` bytes (default:
    :func:`default_memory_budget`) and ``flat_max_cells`` (default :data:`FLAT_MAX_CELLS`). Raises
    InputError when no index fits the budget."""
    budget = int(memory_budget or default_memory_budget())
    flat_max_cells = FLAT_MAX_CELLS if flat_max_cells is None else flat_max_cells
    flat_bytes = 4 * n * dim
    if n * dim <= flat_max_cells and flat_bytes <= budget:
        return Plan("Flat", "flat", 0, n, dim, budget,
                    f"{n} x {dim} = {n * dim:.3g} floats per query <= {flat_max_cells:.3g}: exact search")  # fmt: skip
    nlist = _nlist(n)
    why = (f"{n * dim:.3g} floats per query > {flat_max_cells:.3g}" if flat_bytes <= budget
           else f"Flat needs {flat_bytes / 1e9:.2f} GB > budget {budget / 1e9:.2f} GB")  # fmt: skip
    if n * dim <= budget:
        return Plan(f"IVF{nlist},SQ8", "ivf", nlist, n, dim, budget,
                    f"{why}: inverted lists (sqrt(n) -> {nlist}) of 8-bit codes ({n * dim / 1e9:.2f} GB)")  # fmt: skip
    fits = [m for m in range(1, dim // 2 + 1) if dim % m == 0 and n * m <= budget]
    if not fits:
        raise InputError(
            f"no index of {n} x {dim} vectors fits --memory-budget {budget} bytes (PQ needs at least "
            f"{n * min(m for m in range(1, dim + 1) if dim % m == 0)} bytes); raise --memory-budget"
        )
    m = max(fits)
    return Plan(f"IVF{nlist},PQ{m}", "ivf", nlist, n, dim, budget,
                f"{why}; 8-bit codes need {n * dim / 1e9:.2f} GB > budget: product quantization, {m} bytes a vector")  # fmt: skip


def train_size(nlist: int, n: int) -> int:
    """Training vectors for ``nlist`` lists: 39 per list (FAISS's minimum; k-means cost grows with it), at
    least 20,000 for the scalar quantizer's ranges, never more than ``n``."""
    return int(min(n, max(39 * nlist, 20_000)))


def outgrown(record_family: str, trained_n: int, n: int, dim: int, memory_budget: int | None = None) -> str | None:
    """Why an index ``auto`` built (family, trained on ``trained_n`` vectors) no longer suits ``n``, or None."""
    wanted = plan(n, dim, memory_budget)
    if record_family == "flat" and wanted.family != "flat":
        return f"the catalogue outgrew exact search ({wanted.reason})"
    if record_family == "ivf" and n >= RETRAIN_GROWTH * max(trained_n, 1):
        return f"the catalogue grew from {trained_n} to {n} vectors since the index was trained"
    return None


def held_ids(ids: np.ndarray, count: int = HELD_QUERIES, seed: int = 1) -> np.ndarray:
    """A seeded sample of ``count`` ids (all if fewer), ascending: the queries recall is measured on."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) <= count:
        return np.sort(ids)
    return np.sort(np.random.default_rng(seed).choice(ids, count, replace=False))


class ExactNeighbours:
    """Exact top-``k`` inner-product neighbours of fixed queries, accumulated over chunks of the database.

    ``queries`` (q, dim) float32 unit rows with their own ids ``query_ids`` (q,), which are never their
    own neighbour. After every chunk has passed through :meth:`update`, :attr:`ids` (q, k) holds the
    truth (``-1`` where fewer than ``k`` others exist).
    """

    def __init__(self, queries: np.ndarray, query_ids: np.ndarray, k: int = K) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Fold in database ``ids`` (m,) int64 and their unit ``vectors`` (m, dim) float32."""
        if len(self.queries) == 0 or len(ids) == 0:
            return
        sims = self.queries @ np.asarray(vectors, dtype=np.float32).T
        sims[self.query_ids[:, None] == np.asarray(ids)[None, :]] = -np.inf
        scores = np.concatenate([self.scores, sims], axis=1)
        cand = np.concatenate([self.ids, np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(scores, top, axis=1)
        self.ids = np.where(np.isfinite(self.scores), np.take_along_axis(cand, top, axis=1), -1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of ids, ``-1`` = none)."""
    hits, total = 0, 0
    for f, t in zip(found, truth):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t))
        total += len(t)
    return hits / total if total else 1.0


def tune_nprobe(index: Any, neighbours: ExactNeighbours, target: float = TARGET_RECALL) -> tuple[int, float]:
    """Set ``index``'s nprobe (a :class:`~tagstore.indexes.FaissIndex` on IVF) to the smallest power of two
    whose recall@k on ``neighbours``' queries reaches ``target`` (else to nlist); returns (nprobe, recall)."""
    nlist = index.nlist
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        recall = recall_at(search_without_self(index, neighbours), neighbours.ids)
        if recall >= target or nprobe >= nlist:
            return nprobe, recall
        nprobe = min(nlist, nprobe * 2)


def search_without_self(index: Any, nb: ExactNeighbours) -> np.ndarray:
    """Top-k ids of each query with the query's own id dropped (as ``query similar ID`` excludes it)."""
    _, found = index.search(nb.queries, nb.k + 1)
    out = np.full((len(found), nb.k), -1, dtype=np.int64)
    for row, (ids, own) in enumerate(zip(found, nb.query_ids)):
        kept = ids[ids != own][: nb.k]
        out[row, : len(kept)] = kept
    return out
