"""The unlabelled catalogue sample of a tag fit, in one place, with no randomness.

``add-tag`` and the evaluation both draw through here, so a draw's examples fitted by the evaluation
give the model that ``add-tag`` gives for the same examples on the same catalogue. The sample is the
pool's items in a fixed pseudo-random order of their *positions* (a hash, the same for every tag), the
examples skipped: so it does not depend on a tag's name, adding or removing an example changes it by
at most one track, and tracks appended to the catalogue (new ids come last) leave the order of the
others unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

UNLABELLED_SAMPLE = 400
"""Catalogue tracks (not among the examples) a fit sees as probable negatives and as its reference."""


@functools.lru_cache(maxsize=2)
def position_order(n: int) -> np.ndarray:
    """Positions 0..n-1 in a fixed order (n,) int64 (read-only; kept for the last two n): sorted by a 64-bit
    mix of the position (splitmix64), so the order of the first m positions is the same for every n >= m."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    order = np.argsort(x, kind="stable").astype(np.int64)
    order.flags.writeable = False
    return order


def sample_unlabelled(pool: np.ndarray, exclude: Iterable[int], size: int = UNLABELLED_SAMPLE) -> np.ndarray:
    """Up to ``size`` items of ``pool`` (n,) int64 not in ``exclude``: the first in :func:`position_order`
    of the pool's distinct items, ascending. Returns them ascending (catalogue order)."""
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    if not (pool.size < 2 or bool(np.all(pool[1:] > pool[:-1]))):  # a catalogue's ids come sorted and distinct
        pool = np.unique(pool)
    excluded = np.fromiter((int(i) for i in exclude), dtype=np.int64)
    # at most len(excluded) of the first size + len(excluded) items in the order are dropped
    ordered = pool[position_order(pool.size)[: size + excluded.size]]
    ordered = ordered[~np.isin(ordered, excluded)]
    return np.sort(ordered[:size])
