"""The randomness of a tag fit, in one place: the tag's seed and the unlabelled catalogue sample.

``add-tag`` and the evaluation both draw through here, so a draw's examples fitted by the evaluation
give the model that ``add-tag`` gives for the same examples on the same catalogue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

UNLABELLED_SAMPLE = 400
"""Catalogue tracks (not among the examples) a fit sees as probable negatives and as its reference."""


def tag_seed(name: str) -> int:
    """The seed of a tag's fit, in [0, 2**31): from its name, so a refit draws the same sample."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % (2**31)


def sample_unlabelled(pool: np.ndarray, exclude: Iterable[int], seed: int, size: int = UNLABELLED_SAMPLE) -> np.ndarray:
    """Up to ``size`` items of ``pool`` (n,) int64 not in ``exclude``, drawn uniformly with ``seed``.

    Returns them ascending (catalogue order), so the fit does not depend on the order of the pool.
    """
    excluded = np.fromiter((int(i) for i in exclude), dtype=np.int64)
    # = np.setdiff1d(pool, excluded), without hashing the whole pool (a few examples against 100k ids)
    rest = np.sort(np.asarray(pool, dtype=np.int64).reshape(-1))
    if rest.size:
        rest = rest[np.r_[True, rest[1:] != rest[:-1]]]
    if excluded.size:
        rest = rest[~np.isin(rest, excluded)]
    if rest.size <= size:
        return rest
    return np.sort(np.random.default_rng(seed).choice(rest, size=size, replace=False))
