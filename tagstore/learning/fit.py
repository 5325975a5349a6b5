"""fit_tag: learn one tag from example vectors (the one entry point of tag learning).

Rows seen by a fit: the positives, the user's negatives, and tracks sampled from the catalogue, which
serve twice: half become negatives ("probably not this rare tag", weight UNLABELLED_WEIGHT relative to a
user's negative) and half the *reference*, never trained on, over which each score's median and spread
are measured. Those constants put every score on a catalogue z scale fixed at fit time: the ensemble
averages z-scores, and the threshold is chosen on that scale, so scoring any later batch of tracks gives
exactly what a full rescoring would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from tagstore.errors import TagError
from tagstore.learning.metrics import (
    average_precision_or_nan,
    best_f1_threshold,
    reference_constants,
    stratified_folds,
)
from tagstore.learning.model import METHODS, Ref, TagModel, combine_scores
from tagstore.learning.sampling import sample_unlabelled, tag_seed
from tagstore.learning.probe import C_DEFAULT, C_GRID, class_weights, newton_kernel
from tagstore.learning.stats import CatalogueStats, as_matrix, unit_rows

UNLABELLED_WEIGHT = 0.25
"""Weight of a sampled catalogue track as a negative, relative to a user's negative (before balancing)."""
N_FOLDS = 5
"""Most cross-validation folds; fewer when a class has fewer examples."""
MIN_PER_CLASS_FOR_C = 3
"""C is cross-validated only with at least this many positives and negatives; else C_DEFAULT."""
MIN_REFERENCE = 20
"""The sample is split into negatives and reference only when each half gets at least this many."""
FALLBACK_Z = 2.33
"""Threshold (z above the reference median; ~ top 1% if normal) when there is nothing to cross-validate."""


@dataclass(frozen=True)
class _Data:
    """Everything a fit on a subset of the n training rows needs, computed once."""

    y: np.ndarray  # (n,) bool, positives first
    groups: np.ndarray  # (n,) 0 positive, 1 user negative, 2 sampled negative
    base: np.ndarray  # (n,) weight before class balancing
    Z: np.ndarray  # (n, d) float64 standardised rows
    K: np.ndarray  # (n, n) Gram matrix of Z
    Kr: np.ndarray  # (r, n) reference rows . training rows, standardised
    V: np.ndarray  # (n, d) float64 centred unit rows (prototype geometry)
    Vr: np.ndarray  # (r, d) the same for reference rows


@dataclass(frozen=True)
class _Part:
    """Components fitted on some training rows: probe (alpha over those rows, b) and prototypes."""

    rows: np.ndarray
    alpha: np.ndarray | None
    b: float
    proto_pos: np.ndarray | None
    proto_neg: np.ndarray | None


def _prepare(P: np.ndarray, N: np.ndarray, U: np.ndarray, R: np.ndarray | None, stats: CatalogueStats,
             unlabelled_weight: float) -> _Data:  # fmt: skip
    X = np.vstack([P, N, U])
    groups = np.repeat([0, 1, 2], [len(P), len(N), len(U)])
    Z = stats.standardise(X)
    Zr = Z if R is None else stats.standardise(R)
    V = unit_rows(X.astype(np.float64) - stats.mean)
    Vr = V if R is None else unit_rows(R.astype(np.float64) - stats.mean)
    base = np.where(groups == 2, unlabelled_weight, 1.0)
    return _Data(groups == 0, groups, base, Z, Z @ Z.T, Zr @ Z.T, V, Vr)


CV_TOL = 1e-9
"""Newton tolerance of the cross-validation fits (ranks and thresholds need no more); the final fit: 1e-13."""


def _fit_part(data: _Data, rows: np.ndarray, method: str, C: float, warm: _Part | None = None,
              tol: float = 1e-13) -> _Part:  # fmt: skip
    """Fit the method's components on training ``rows`` (warm-starting the probe from ``warm``)."""
    y = data.y[rows]
    alpha, b, pos, neg = None, 0.0, None, None
    if method in ("probe", "ensemble"):
        s = class_weights(y, "balanced", data.base[rows])
        start = (None, 0.0) if warm is None else (warm.alpha, warm.b)
        alpha, b, _ = newton_kernel(data.K[np.ix_(rows, rows)], np.where(y, 1.0, -1.0), s, C, *start, tol=tol)
    if method in ("prototype", "ensemble"):
        V, w = data.V[rows], data.base[rows]
        pos = unit_rows(V[y].mean(axis=0, keepdims=True))[0]
        # not renormalised: its length is the negatives' coherence (see TagModel)
        neg = (w[~y] @ V[~y]) / w[~y].sum()
    return _Part(rows, alpha, b, pos, neg)


def _components(part: _Part, K_block: np.ndarray, V_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probe logits and prototype scores (m,) of rows given their kernel block (m, n) and unit rows."""
    probe = K_block[:, part.rows] @ part.alpha + part.b if part.alpha is not None else np.zeros(len(V_rows))
    proto = (
        V_rows @ (part.proto_pos - part.proto_neg) if part.proto_pos is not None else np.zeros(len(V_rows))
    )
    return probe, proto


def _refs(method: str, part: _Part, data: _Data) -> tuple[Ref | None, Ref | None, Ref]:
    """Reference constants (probe_ref, proto_ref, score_ref) of a part, over the reference rows."""
    probe, proto = _components(part, data.Kr, data.Vr)
    probe_ref = reference_constants(probe) if part.alpha is not None else None
    proto_ref = reference_constants(proto) if part.proto_pos is not None else None
    return (
        probe_ref,
        proto_ref,
        reference_constants(combine_scores(method, probe, proto, probe_ref, proto_ref)),
    )


def _score_z(method: str, part: _Part, data: _Data, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-scores of training ``rows`` under ``part`` (on its own reference scale), and their probe logits."""
    probe_ref, proto_ref, (c, scale) = _refs(method, part, data)
    probe, proto = _components(part, data.K[rows], data.V[rows])
    return (combine_scores(method, probe, proto, probe_ref, proto_ref) - c) / scale, probe


def _cross_validate(
    data: _Data, folds: np.ndarray, method: str, grid: tuple[float, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Out-of-fold (z-scores (n,), probe logits (n,)) for each C of ``grid`` (ascending, warm-started)."""
    n = data.y.shape[0]
    out = [(np.empty(n), np.empty(n)) for _ in grid]
    for f in range(int(folds.max()) + 1):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        part = None
        for (oof_z, oof_logit), C in zip(out, grid, strict=True):
            part = _fit_part(data, train, method, C, warm=part, tol=CV_TOL)
            oof_z[test], oof_logit[test] = _score_z(method, part, data, test)
    return out


def _select(data: _Data, oof: list[tuple[np.ndarray, np.ndarray]], grid: tuple[float, ...]) -> int:
    """Index of the C with the best out-of-fold AP; ties (1e-9) go to the lower weighted log-loss."""
    s = class_weights(data.y, "balanced", data.base)
    sign = np.where(data.y, 1.0, -1.0)
    keys = [(-round(average_precision_or_nan(data.y, z), 9), s @ np.logaddexp(0, -sign * lg)) for z, lg in oof]
    return min(range(len(grid)), key=keys.__getitem__)


def fit_tag(
    X_pos: np.ndarray,
    X_neg: np.ndarray | None,
    X_unlabelled: np.ndarray | None,
    stats: CatalogueStats,
    method: str = "ensemble",
    seed: int = 0,
    *,
    C: float | None = None,
    X_reference: np.ndarray | None = None,
    unlabelled_weight: float = UNLABELLED_WEIGHT,
    n_folds: int = N_FOLDS,
) -> TagModel:
    """Learn a tag from example vectors; all arrays are (m, d) float32 rows of the store's layout.

    X_pos: positives (>= 1). X_neg: the user's negatives (may be None/empty). X_unlabelled: a uniform
    sample of catalogue tracks, not labelled for this tag (recommend 400): when it has >= 2*MIN_REFERENCE
    rows, a seeded half become down-weighted negatives and the other half the reference sample (unless
    ``X_reference`` is given, then all are negatives). Without a reference sample, the training rows
    themselves serve as reference. stats: catalogue mean/std. method: "probe", "prototype" or "ensemble".
    C: fix the probe's inverse L2 strength instead of cross-validating it. Deterministic given ``seed``.
    """
    if method not in METHODS:
        raise TagError(f"unknown tag learning method {method!r}; use one of {', '.join(METHODS)}")
    if not 0.0 < unlabelled_weight <= 1.0:
        raise TagError(f"unlabelled_weight must be in (0, 1], got {unlabelled_weight}")
    d = stats.dim
    P = as_matrix(X_pos, "positive examples", d)
    N = as_matrix(X_neg, "negative examples", d)
    U = as_matrix(X_unlabelled, "sampled catalogue tracks", d)
    R = None if X_reference is None else as_matrix(X_reference, "reference tracks", d)
    if len(P) == 0:
        raise TagError("the tag has no positive examples; label at least one track as positive")
    if len(N) == 0 and len(U) == 0:
        raise TagError(
            "the tag has only positive examples and no catalogue tracks to sample negatives from; "
            "add negative examples or tracks to the catalogue"
        )
    rng = np.random.default_rng(seed)
    if R is None and len(U) >= 2 * MIN_REFERENCE:
        perm = rng.permutation(len(U))
        R, U = U[np.sort(perm[: len(U) // 2])], U[np.sort(perm[len(U) // 2 :])]
    if R is not None and len(R) == 0:
        R = None
    data = _prepare(P, N, U, R, stats, unlabelled_weight)
    return _fit(
        data, stats, method, seed, C, n_folds, rng, (len(P), len(N), len(U), len(R) if R is not None else 0)
    )


def _fit(data: _Data, stats: CatalogueStats, method: str, seed: int, C: float | None, n_folds: int,
         rng: np.random.Generator, counts: tuple[int, int, int, int]) -> TagModel:  # fmt: skip
    n_pos, n_neg = counts[0], counts[1] + counts[2]
    k = min(n_folds, n_pos, n_neg)
    if method == "prototype":
        grid: tuple[float, ...] = (float("nan"),)
    elif C is not None:
        grid = (float(C),)
    elif k >= 2 and min(n_pos, n_neg) >= MIN_PER_CLASS_FOR_C:
        grid = C_GRID
    else:
        grid = (C_DEFAULT,)
    if C is not None and not C > 0:
        raise TagError(f"C must be positive, got {C}")
    oof = _cross_validate(data, stratified_folds(data.groups, k, rng), method, grid) if k >= 2 else None
    i = _select(data, oof, grid) if oof is not None and len(grid) > 1 else 0
    final = _fit_part(data, np.arange(data.y.shape[0]), method, grid[i])
    probe_ref, proto_ref, score_ref = _refs(method, final, data)
    if oof is not None:
        t_z, cv_f1 = best_f1_threshold(data.y, oof[i][0])
        cv_ap = average_precision_or_nan(data.y, oof[i][0])
    else:  # one positive: nothing held out; stay below the positives' own (optimistic) scores
        z_pos, _ = _score_z(method, final, data, np.flatnonzero(data.y))
        t_z, cv_f1, cv_ap = min(FALLBACK_Z, 0.5 * float(z_pos.min())), float("nan"), float("nan")
    f32 = lambda a: None if a is None else np.asarray(a, dtype=np.float32)  # noqa: E731
    return TagModel(
        method=method, mean=stats.mean.copy(), std=stats.std.copy(),
        threshold=score_ref[0] + t_z * score_ref[1], score_ref=score_ref,
        coef=None if final.alpha is None else f32(data.Z.T @ final.alpha), intercept=float(final.b),
        C=grid[i], proto_pos=f32(final.proto_pos), proto_neg=f32(final.proto_neg),
        probe_ref=probe_ref, proto_ref=proto_ref, cv_ap=cv_ap, cv_f1=cv_f1,
        n_pos=counts[0], n_neg=counts[1], n_sampled=counts[2], n_reference=counts[3], seed=seed,
    )  # fmt: skip


def fit_examples(
    tag: str,
    X_pos: np.ndarray,
    X_neg: np.ndarray,
    pool: np.ndarray,
    rows: Callable[[np.ndarray], np.ndarray],
    exclude: Iterable[int],
    stats: CatalogueStats,
    method: str,
) -> tuple[TagModel, np.ndarray]:
    """Fit ``tag`` the one way ``add-tag`` and the evaluation both fit: the user's examples, plus an
    unlabelled sample of the catalogue drawn with the tag's seed.

    X_pos, X_neg: (p, d), (n, d) example vectors. pool: (m,) int64 catalogue ids (or rows) to sample
    from; ``rows(ids)`` returns their vectors (k, d); ``exclude``: ids that are examples. Returns the
    model and the sampled ids (ascending).
    """
    seed = tag_seed(tag)
    sampled = sample_unlabelled(pool, exclude, seed)
    U = rows(sampled) if len(sampled) else np.zeros((0, stats.dim), np.float32)
    # The fit solves many tiny systems: BLAS threads only add contention there (5-10x slower on a busy
    # machine), and one thread makes the result independent of the machine's thread count.
    with threadpool_limits(1, user_api="blas"):
        return fit_tag(X_pos, X_neg, U, stats, method=method, seed=seed), sampled
