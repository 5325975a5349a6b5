"""Catalogue-wide normalisation constants and the input checks shared by tag learning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tagstore.errors import TagError

STD_FLOOR = 1e-6
"""Dimensions whose catalogue std is below this are left unscaled (std taken as 1)."""
RELATIVE_STD_FLOOR = 1e-2
"""A dimension's std is at least this fraction of the typical (root-mean-variance) std: a nearly constant
dimension (a ReLU unit that rarely fires) stays inert instead of being scaled up into noise."""


def as_matrix(X: np.ndarray | None, name: str, dim: int) -> np.ndarray:
    """Check ``X`` is a finite ``(n, dim)`` array; return it as contiguous float32 (None -> ``(0, dim)``)."""
    if X is None:
        return np.zeros((0, dim), dtype=np.float32)
    A = np.asarray(X)
    if A.ndim == 1 and A.size == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if A.ndim != 2:
        raise TagError(f"{name} must be an (n, {dim}) array of track vectors, got shape {A.shape}")
    if A.shape[1] != dim:
        raise TagError(
            f"{name} have {A.shape[1]} dimensions but the catalogue has {dim}; "
            "use vectors of the store's embedder layout"
        )
    if not np.issubdtype(A.dtype, np.number) or np.issubdtype(A.dtype, np.complexfloating):
        raise TagError(f"{name} must be real numbers, got dtype {A.dtype}")
    A = np.ascontiguousarray(A, dtype=np.float32)
    bad = ~np.isfinite(A).all(axis=1)
    if bad.any():
        raise TagError(f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf; re-embed that track")
    return A


def unit_rows(A: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``(n, d)`` ``A`` (zero rows stay zero); same dtype."""
    norms = np.sqrt(np.einsum("ij,ij->i", A, A))
    return A / np.maximum(norms, np.finfo(A.dtype).tiny)[:, None]


@dataclass(frozen=True)
class CatalogueStats:
    """Per-dimension mean and std of the catalogue's track vectors, used to standardise them.

    mean, std: ``(d,)`` float32 (population std, ddof=0, floored: see :data:`RELATIVE_STD_FLOOR` and
    :data:`STD_FLOOR`); the one statistics of the store: the index normalisation, ``add-tag`` and the
    evaluation all standardise with it;
    count: how many tracks they were computed over.
    """

    mean: np.ndarray
    std: np.ndarray
    count: int

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return int(self.mean.shape[0])

    @classmethod
    def from_embeddings(cls, X: np.ndarray, chunk_size: int = 65536) -> CatalogueStats:
        """Stats of an ``(n, d)`` array, read in chunks of ``chunk_size`` rows."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise TagError(f"catalogue vectors must be an (n, d) array, got shape {X.shape}")
        return cls.from_chunks(X[i : i + chunk_size] for i in range(0, X.shape[0], chunk_size))

    @classmethod
    def from_chunks(cls, chunks: Iterable[np.ndarray]) -> CatalogueStats:
        """Stats over an iterable of ``(m_i, d)`` chunks (e.g. batches fetched from the catalogue).

        Chunks are merged exactly with Chan et al.'s pairwise update in float64, so the result equals the
        one-pass computation over the concatenation up to rounding.
        """
        n, mean, m2 = 0, None, None
        for chunk in chunks:
            C = np.asarray(chunk, dtype=np.float64)
            if C.ndim != 2 or (mean is not None and C.shape[1] != mean.shape[0]):
                raise TagError(f"catalogue chunk has shape {C.shape}; every chunk must be (m, d)")
            if C.shape[0] == 0:
                continue
            if not np.isfinite(C).all():
                raise TagError("catalogue vectors contain NaN or inf; re-embed the affected tracks")
            nb, mb = C.shape[0], C.mean(axis=0)
            m2b = ((C - mb) ** 2).sum(axis=0)
            if mean is None:
                n, mean, m2 = nb, mb, m2b
                continue
            delta, total = mb - mean, n + nb
            mean = mean + delta * (nb / total)
            m2 = m2 + m2b + delta**2 * (n * nb / total)
            n = total
        if mean is None:
            raise TagError("the catalogue is empty; add tracks before learning tags")
        var = m2 / n
        std = np.maximum(np.sqrt(var), RELATIVE_STD_FLOOR * np.sqrt(var.mean()))
        std[std < STD_FLOOR] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32), int(n))

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / std`` for ``(n, d)`` X, as float64 (used on the few rows a fit sees)."""
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.std

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays for storage: ``mean``, ``std``, ``count``."""
        return {"mean": self.mean, "std": self.std, "count": np.asarray(self.count, dtype=np.int64)}

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray]) -> CatalogueStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["mean"], dtype=np.float32),
            np.asarray(d["std"], dtype=np.float32),
            int(d["count"]),
        )
