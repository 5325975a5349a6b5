"""Working with a tag around its examples: propagate (kNN vote), suggest (active learning), explain."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tagstore.errors import TagError
from tagstore.learning.model import TagModel
from tagstore.learning.stats import as_matrix, unit_rows


@dataclass(frozen=True)
class Suggestion:
    """A track proposed by propagation: its score and the example ids that voted, strongest first."""

    id: int
    score: float
    sources: tuple[int, ...]


def propagate(
    example_ids: np.ndarray,
    neighbour_ids: np.ndarray,
    similarities: np.ndarray,
    *,
    exclude: Iterable[int] = (),
    min_similarity: float = 0.0,
    limit: int | None = None,
) -> list[Suggestion]:
    """Similarity-weighted kNN vote from the positive examples.

    example_ids: (m,) int catalogue ids of the examples; neighbour_ids, similarities: (m, k) their kNN
    results (cosine, higher is closer; id < 0 is padding). A candidate's score is
    sum(similarity to each example that retrieved it) / m, in [0, 1] for cosine: 1 means "identical to
    every example". Votes at or below ``min_similarity`` are ignored; the examples themselves and ids in
    ``exclude`` (e.g. labelled negatives) are never suggested. Sorted by score (desc), then id.
    """
    ex = np.asarray(example_ids, dtype=np.int64).reshape(-1)
    nb, sim = np.asarray(neighbour_ids), np.asarray(similarities, dtype=np.float64)
    if nb.ndim != 2 or nb.shape != sim.shape or nb.shape[0] != ex.shape[0]:
        raise TagError(
            f"kNN results must be ({ex.shape[0]}, k) ids and similarities, got {nb.shape} and {sim.shape}"
        )
    if ex.size == 0:
        return []
    src = np.repeat(ex, nb.shape[1])
    ids, sims = nb.astype(np.int64).reshape(-1), sim.reshape(-1)
    drop = np.concatenate([ex, np.fromiter(exclude, dtype=np.int64)])
    keep = (ids >= 0) & (sims > min_similarity) & np.isfinite(sims) & ~np.isin(ids, drop)
    src, ids, sims = src[keep], ids[keep], sims[keep]
    if ids.size == 0:
        return []
    order = np.lexsort((-sims, src, ids))  # by id, then source, strongest first
    src, ids, sims = src[order], ids[order], sims[order]
    first = np.r_[True, (ids[1:] != ids[:-1]) | (src[1:] != src[:-1])]  # one vote per (example, id)
    src, ids, sims = src[first], ids[first], sims[first]
    uniq, start = np.unique(ids, return_index=True)
    scores = np.add.reduceat(sims, start) / ex.size
    bounds = np.r_[start, ids.size]
    out = []
    for j in np.lexsort((uniq, -scores))[:limit]:
        a, b = bounds[j], bounds[j + 1]
        voters = src[a:b][np.argsort(-sims[a:b], kind="stable")]
        out.append(Suggestion(int(uniq[j]), float(scores[j]), tuple(int(v) for v in voters)))
    return out


def suggest(
    model: TagModel,
    ids: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray | Callable[[np.ndarray], np.ndarray],
    n: int = 10,
    *,
    exclude: Iterable[int] = (),
    pool_size: int | None = None,
    diversity: float = 0.5,
) -> np.ndarray:
    """Pick ``n`` unlabelled tracks whose labels would most help the tag (uncertain, yet diverse).

    ids, scores: (N,) catalogue ids and the model's scores of them. vectors: (N, d) aligned with ids,
    or a function returning the (p, d) vectors of the p ids it is given (only the pool is fetched).
    1. Uncertainty u = |score - threshold| / score scale (reference z units); ids in ``exclude`` (the
       labelled tracks) are dropped; the ``pool_size`` (default max(10 n, 100)) least certain remain.
    2. Greedy maximal marginal relevance: repeatedly take the pool track maximising
       (1 - diversity) * exp(-u) - diversity * max cosine to the tracks already taken,
       cosines between vectors centred on the model's catalogue mean.
    Returns (<= n,) int64 ids in the order taken (the first is the most uncertain).
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if ids.shape != scores.shape:
        raise TagError(f"ids {ids.shape} and scores {scores.shape} must have the same length")
    if not 0.0 <= diversity <= 1.0:
        raise TagError(f"diversity must be in [0, 1], got {diversity}")
    u = np.abs(scores - model.threshold) / model.score_ref[1]
    cand = np.flatnonzero(~np.isin(ids, np.fromiter(exclude, dtype=np.int64)) & np.isfinite(u))
    pool_size = max(10 * n, 100) if pool_size is None else pool_size
    cand = cand[np.lexsort((ids[cand], u[cand]))][: max(pool_size, n)]
    if n <= 0 or cand.size == 0:
        return np.zeros(0, dtype=np.int64)
    V = vectors(ids[cand]) if callable(vectors) else np.asarray(vectors)[cand]
    V = unit_rows(as_matrix(V, "suggestion pool vectors", model.dim).astype(np.float64) - model.mean)
    gain = (1.0 - diversity) * np.exp(-u[cand])
    redundancy = np.zeros(cand.size)  # max(0, max cosine to the tracks taken)
    taken: list[int] = []
    for _ in range(min(n, cand.size)):
        value = gain - diversity * redundancy
        value[taken] = -np.inf
        j = int(np.argmax(value))
        taken.append(j)
        redundancy = np.maximum(redundancy, V @ V[j])
    return ids[cand[taken]]


@dataclass(frozen=True)
class Contribution:
    """One standardised dimension's share of the probe logit: value * weight = contribution."""

    dim: int
    value: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class Explanation:
    """Why a track got its score.

    parts (by method): ``probe_logit``, ``intercept``, ``top_dimensions_sum``, ``other_dimensions``
    (logit = intercept + top_dimensions_sum + other_dimensions); ``cos_pos``, ``cos_neg``, ``neg_coherence``
    (length of the unnormalised negative prototype), ``prototype`` (= cos_pos - neg_coherence * cos_neg);
    for the ensemble also ``probe_z``, ``prototype_z`` (score = their mean).
    nearest_positive / nearest_negative: (example id, cosine of centred vectors), closest first.
    """

    score: float
    threshold: float
    predicted: bool
    parts: dict[str, float]
    top_dimensions: tuple[Contribution, ...]
    nearest_positive: tuple[tuple[int, float], ...]
    nearest_negative: tuple[tuple[int, float], ...]


def _nearest(xu: np.ndarray, E: np.ndarray, ids: np.ndarray | None, mean: np.ndarray, k: int) -> tuple:
    if E.shape[0] == 0:
        return ()
    ids = np.arange(E.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (E.shape[0],):
        raise TagError(f"{E.shape[0]} example vectors but {ids.shape} example ids")
    cos = unit_rows(E.astype(np.float64) - mean) @ xu
    order = np.argsort(-cos, kind="stable")[:k]
    return tuple((int(ids[i]), float(cos[i])) for i in order)


def explain(
    model: TagModel,
    x: np.ndarray,
    pos_vectors: np.ndarray,
    neg_vectors: np.ndarray | None = None,
    pos_ids: np.ndarray | None = None,
    neg_ids: np.ndarray | None = None,
    *,
    k: int = 3,
    top_dims: int = 10,
) -> Explanation:
    """Explain ``model``'s score of one track vector ``x`` (d,) against example vectors (p, d) / (q, d).

    Ids default to row numbers. ``top_dims`` standardised dimensions with the largest |contribution| to
    the probe logit are listed. Cosines use vectors centred on the model's catalogue mean, as the
    prototype does.
    """
    X = as_matrix(np.asarray(x).reshape(1, -1), "track vector", model.dim)
    P = as_matrix(pos_vectors, "positive example vectors", model.dim)
    N = as_matrix(neg_vectors, "negative example vectors", model.dim)
    probe, proto = (float(a[0]) for a in model.components(X))
    score = float(model.score(X)[0])
    xc = X[0].astype(np.float64) - model.mean
    parts: dict[str, float] = {}
    top: tuple[Contribution, ...] = ()
    if model.uses_probe:
        z = xc / model.std
        contrib = z * model.coef
        order = np.argsort(-np.abs(contrib), kind="stable")[:top_dims]
        top = tuple(Contribution(int(j), float(z[j]), float(model.coef[j]), float(contrib[j])) for j in order)
        top_sum = float(contrib[order].sum())
        parts.update(probe_logit=probe, intercept=model.intercept, top_dimensions_sum=top_sum,
                     other_dimensions=float(contrib.sum()) - top_sum)  # fmt: skip
    xu = unit_rows(xc[None, :])[0]
    if model.uses_prototype:
        coherence = float(np.linalg.norm(model.proto_neg))
        cos_neg = float(xu @ model.proto_neg) / coherence if coherence > 0 else 0.0
        parts.update(cos_pos=float(xu @ model.proto_pos), cos_neg=cos_neg, neg_coherence=coherence,
                     prototype=proto)  # fmt: skip
    if model.method == "ensemble":
        parts.update(probe_z=(probe - model.probe_ref[0]) / model.probe_ref[1],
                     prototype_z=(proto - model.proto_ref[0]) / model.proto_ref[1])  # fmt: skip
    return Explanation(
        score=score, threshold=model.threshold, predicted=score >= model.threshold, parts=parts,
        top_dimensions=top, nearest_positive=_nearest(xu, P, pos_ids, model.mean, k),
        nearest_negative=_nearest(xu, N, neg_ids, model.mean, k),
    )  # fmt: skip
