"""A 2-D map of the collection: every track's index vector projected to the plane (PCA, or UMAP when installed).

PCA's two axes come from a seeded sample of at most :data:`PCA_SAMPLE` tracks (the covariance of 20k
rows pins the top components as well as all 100k do) and every track is then projected onto them, in
chunks, from the memory-mapped vector matrix; each axis's sign is fixed so the map does not flip between
runs. UMAP (``umap-learn``, optional) embeds every index vector with the cosine metric. Coordinates are
scaled into [-1, 1] with one factor for both axes, so distances keep their proportions.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tagstore import catalogue as cat
from tagstore.catalogue import records
from tagstore.derived.matrix import matrix
from tagstore.errors import InputError, MissingDependencyError
from tagstore.layout import normalise_blocks
from tagstore.store import Store

PCA_SAMPLE = 20_000
CHUNK = 16_384
METHODS = ("pca", "umap")
Rows = Callable[[np.ndarray], np.ndarray]
"""Index vectors ``(len(rows), dim)`` float32 of the tracks at positions ``rows`` (in ascending id order)."""


@dataclass(frozen=True)
class Projection:
    """Map coordinates ``xy`` ``(n, 2)`` float32 in [-1, 1] of tracks ``ids`` ``(n,)`` int64 ascending,
    made by ``method`` from the catalogue at ``generation``."""

    ids: np.ndarray
    xy: np.ndarray
    method: str
    generation: int


def available() -> list[str]:
    """The projection methods this installation can run."""
    spec = importlib.util.find_spec("umap")
    return ["pca"] + (["umap"] if spec is not None and spec.origin is not None else [])  # not a leftover folder


def generation(store: Store) -> int:
    """The catalogue generation a projection made now would carry (to tell whether a kept one is stale)."""
    with store.reader() as con:
        return cat.generation(con)


def project(store: Store, method: str = "pca", seed: int = 0) -> Projection:
    """Project every stored track to 2-D. The caller holds the write lock (the vector matrix may be refreshed)."""
    if method not in METHODS:
        raise InputError(f"unknown map method {method!r}; choose from {', '.join(METHODS)}")
    if method == "umap" and "umap" not in available():
        raise MissingDependencyError("the umap map needs umap-learn: pip install umap-learn (or use method pca)")
    mat = matrix(store)
    with store.reader() as con:
        gen = cat.generation(con)
        record = records.active_index(con)
    mean = std = None
    if record is not None and record.layout_digest == store.layout.digest:
        mean, std = record.stats_mean, record.stats_std
    order = np.asarray(mat.order)
    ids = np.asarray(mat.ids)[order]
    if len(ids) == 0:
        return Projection(ids, np.zeros((0, 2), np.float32), method, gen)

    def vectors(rows: np.ndarray) -> np.ndarray:
        return normalise_blocks(np.asarray(mat.vectors[order[rows]]), store.layout, mean, std)

    xy = _pca(vectors, len(ids), seed) if method == "pca" else _umap(vectors, len(ids), seed)
    scale = float(np.abs(xy).max()) or 1.0
    return Projection(ids, (xy / scale).astype(np.float32), method, gen)


def _pca(vectors: Rows, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, PCA_SAMPLE), replace=False))
    S = vectors(sample).astype(np.float64)
    centre = S.mean(axis=0)
    S -= centre
    if S.shape[0] < 2:
        return np.zeros((n, 2), np.float64)
    cov = S.T @ S / max(S.shape[0] - 1, 1)
    values, vecs = np.linalg.eigh(cov)
    W = vecs[:, np.argsort(values)[::-1][:2]]
    if W.shape[1] < 2:  # 1-d vectors: a flat map
        W = np.pad(W, ((0, 0), (0, 2 - W.shape[1])))
    W *= np.where(W[np.abs(W).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)  # largest loading positive: no flips
    out = np.empty((n, 2), np.float64)
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        out[rows] = (vectors(rows).astype(np.float64) - centre) @ W
    return out


def _umap(vectors: Rows, n: int, seed: int) -> np.ndarray:
    import umap  # optional: umap-learn

    X = np.concatenate([vectors(np.arange(s, min(n, s + CHUNK))) for s in range(0, n, CHUNK)])
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, max(2, n - 1)))
    return np.asarray(reducer.fit_transform(X), dtype=np.float64)
