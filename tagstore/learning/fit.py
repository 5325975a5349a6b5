"""fit_tag: learn one tag from example vectors (the one entry point of tag learning).

Rows seen by a fit: the positives, the user's negatives, and tracks sampled from the catalogue, which
serve twice: alternate ones (in catalogue order) become negatives ("probably not this rare tag", weight
UNLABELLED_WEIGHT relative to a user's negative) and the others the *reference*, never trained on, over
which each score's median and spread are measured. Those constants put every score on a catalogue z
scale fixed at fit time: the ensemble averages z-scores, and the threshold is chosen on that scale, so
scoring any later batch of tracks gives exactly what a full rescoring would.

A fit is a function of its rows as a set: examples are put in a canonical (content) order first, folds
are grouped and dealt deterministically (:mod:`.decision`), and nothing is random. So the same examples,
in any order and under any tag name, give the same model, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tagstore.errors import TagError
from tagstore.learning.decision import (
    Calibration,
    OutOfFold,
    Rule,
    base_rate,
    choose_threshold,
    grouped_folds,
    platt,
)
from tagstore.learning.metrics import average_precision_or_nan, reference_constants
from tagstore.learning.model import METHODS, Ref, TagModel, combine_scores
from tagstore.learning.sampling import sample_unlabelled
from tagstore.learning.probe import C_DEFAULT, C_GRID, class_weights, newton_kernel
from tagstore.learning.stats import CatalogueStats, as_matrix, unit_rows
from tagstore.learning.threads import one_blas_thread

log = logging.getLogger("tagstore")

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


def _canonical(X: np.ndarray, groups: list[Hashable]) -> tuple[np.ndarray, list[Hashable]]:
    """Rows of ``X`` (and their groups) in a canonical order: by their bytes (then group), so a fit does
    not depend on the order examples were given in."""
    order = sorted(range(len(X)), key=lambda i: (X[i].tobytes(), repr(groups[i])))
    return X[order], [groups[i] for i in order]


def fit_tag(
    X_pos: np.ndarray,
    X_neg: np.ndarray | None,
    X_unlabelled: np.ndarray | None,
    stats: CatalogueStats,
    method: str = "ensemble",
    *,
    C: float | None = None,
    X_reference: np.ndarray | None = None,
    unlabelled_weight: float = UNLABELLED_WEIGHT,
    n_folds: int = N_FOLDS,
    groups: Sequence[Hashable] | None = None,
    rule: Rule | None = None,
) -> TagModel:
    """Learn a tag from example vectors; all arrays are (m, d) float32 rows of the store's layout.

    X_pos: positives (>= 1). X_neg: the user's negatives (may be None/empty). X_unlabelled: a uniform
    sample of catalogue tracks, not labelled for this tag (recommend 400), in catalogue order: when it has
    >= 2*MIN_REFERENCE rows, alternate rows become down-weighted negatives and the others the reference
    sample (unless ``X_reference`` is given, then all are negatives). Without a reference sample, the
    training rows themselves serve as reference. stats: catalogue mean/std. method: "probe", "prototype"
    or "ensemble". C: fix the probe's inverse L2 strength instead of cross-validating it. groups: one
    hashable per example (positives, then negatives): examples of one group (a track, an album) never
    fall in different cross-validation folds (default: each example its own group); sampled tracks are
    each their own group. rule: how the threshold is chosen (default F1, see :mod:`.decision`).
    Deterministic, and invariant to the order of the examples.
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
    g = [("example", i) for i in range(len(P) + len(N))] if groups is None else list(groups)
    if len(g) != len(P) + len(N):
        raise TagError(f"groups has {len(g)} entries for {len(P) + len(N)} examples; give one per example")
    P, g_pos = _canonical(P, g[: len(P)])
    N, g_neg = _canonical(N, g[len(P) :])
    if R is None and len(U) >= 2 * MIN_REFERENCE:
        R, U = U[0::2], U[1::2]
    if R is not None and len(R) == 0:
        R = None
    data = _prepare(P, N, U, R, stats, unlabelled_weight)
    row_groups = [("+", x) for x in g_pos] + [("+", x) for x in g_neg] + [("sampled", i) for i in range(len(U))]
    counts = (len(P), len(N), len(U), len(R) if R is not None else 0)
    return _fit(data, stats, method, C, n_folds, row_groups, counts, rule or Rule())


def _grid(method: str, C: float | None, k: int, n_pos: int, n_neg: int) -> tuple[float, ...]:
    if method == "prototype":
        return (float("nan"),)
    if C is not None:
        if not C > 0:
            raise TagError(f"C must be positive, got {C}")
        return (float(C),)
    if k >= 2 and min(n_pos, n_neg) >= MIN_PER_CLASS_FOR_C:
        return C_GRID
    return (C_DEFAULT,)


def _fold_aps(y: np.ndarray, z: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """AP of each fold's own held-out rows (folds with a positive and a negative)."""
    out = [average_precision_or_nan(y[folds == f], z[folds == f]) for f in range(int(folds.max()) + 1)
           if y[folds == f].any() and not y[folds == f].all()]  # fmt: skip
    return np.array(out, dtype=np.float64)


def _reference_z(method: str, part: _Part, data: _Data, score_ref: Ref) -> np.ndarray:
    """z-scores of the reference rows under ``part`` (its own constants ``score_ref``)."""
    probe_ref, proto_ref, _ = _refs(method, part, data)
    probe, proto = _components(part, data.Kr, data.Vr)
    return (combine_scores(method, probe, proto, probe_ref, proto_ref) - score_ref[0]) / score_ref[1]


def _fit(data: _Data, stats: CatalogueStats, method: str, C: float | None, n_folds: int,
         row_groups: list[Hashable], counts: tuple[int, int, int, int], rule: Rule) -> TagModel:  # fmt: skip
    n_pos, n_neg = counts[0], counts[1] + counts[2]
    pos_groups = {gr for gr, y in zip(row_groups, data.y) if y}
    neg_groups = {gr for gr, y in zip(row_groups, data.y) if not y}
    k = min(n_folds, len(pos_groups), len(neg_groups))
    grid = _grid(method, C, k, n_pos, n_neg)
    folds = grouped_folds(row_groups, k) if k >= 2 else None
    oof = _cross_validate(data, folds, method, grid) if folds is not None else None
    i = _select(data, oof, grid) if oof is not None and len(grid) > 1 else 0
    final = _fit_part(data, np.arange(data.y.shape[0]), method, grid[i])
    probe_ref, proto_ref, score_ref = _refs(method, final, data)
    nan = float("nan")
    calibration, cv, cv_ap, cv_ap_std = None, None, nan, nan
    if oof is not None:
        z = oof[i][0]
        sampled = data.groups == 2
        catalogue = np.concatenate([z[sampled], _reference_z(method, final, data, score_ref)])
        if not catalogue.size:  # no catalogue sample: the examples are the catalogue
            catalogue = z
        cv = OutOfFold(z[data.y], z[~data.y], data.base[~data.y], catalogue)
        calibration = Calibration(*platt(cv), base_rate(cv, low=n_pos / max(stats.count, n_pos)))
        t_z = choose_threshold(cv, calibration, rule)
        cv_ap = average_precision_or_nan(data.y, z)
        per_fold = _fold_aps(data.y, z, folds)
        cv_ap_std = float(per_fold.std()) if per_fold.size else nan
    else:  # one positive group: nothing held out; stay below the positives' own (optimistic) scores
        if rule.kind != "f1":
            log.warning("a tag with one positive example (group) cannot be calibrated: threshold rule %s "
                        "falls back to the default until more examples are given", rule.describe())  # fmt: skip
            rule = Rule()
        z_pos, _ = _score_z(method, final, data, np.flatnonzero(data.y))
        t_z = min(FALLBACK_Z, 0.5 * float(z_pos.min()))
    f32 = lambda a: None if a is None else np.asarray(a, dtype=np.float32)  # noqa: E731
    return TagModel(
        method=method, mean=stats.mean.copy(), std=stats.std.copy(),
        threshold=score_ref[0] + t_z * score_ref[1], score_ref=score_ref,
        coef=None if final.alpha is None else f32(data.Z.T @ final.alpha), intercept=float(final.b),
        C=grid[i], proto_pos=f32(final.proto_pos), proto_neg=f32(final.proto_neg),
        probe_ref=probe_ref, proto_ref=proto_ref, cv_ap=cv_ap, cv_ap_std=cv_ap_std,
        n_pos=counts[0], n_neg=counts[1], n_sampled=counts[2], n_reference=counts[3],
        calibration=calibration, oof=cv, rule=rule,
    )  # fmt: skip


def rethreshold(model: TagModel, rule: Rule) -> TagModel:
    """``model`` with the threshold of ``rule``, from its stored out-of-fold scores (no refit)."""
    if model.oof is None or model.calibration is None:
        if rule.kind == "f1":
            return model
        raise TagError(
            f"this tag was fitted from {model.n_pos} positive example(s) in one group, too few to cross-validate "
            "and calibrate; add examples before setting a threshold rule"
        )
    t_z = choose_threshold(model.oof, model.calibration, rule)
    return replace(model, threshold=model.score_ref[0] + t_z * model.score_ref[1], rule=rule)


def fit_examples(
    tag: str,
    X_pos: np.ndarray,
    X_neg: np.ndarray,
    pool: np.ndarray,
    rows: Callable[[np.ndarray], np.ndarray],
    exclude: Iterable[int],
    stats: CatalogueStats,
    method: str,
    *,
    groups: Sequence[Hashable] | None = None,
    rule: Rule | None = None,
) -> tuple[TagModel, np.ndarray]:
    """Fit a tag the one way ``add-tag`` and the evaluation both fit: the user's examples, plus a
    fixed-order unlabelled sample of the catalogue (:func:`.sampling.sample_unlabelled`).

    tag: the tag's name, only for messages (it never changes the fit). X_pos, X_neg: (p, d), (n, d)
    example vectors; groups: one hashable per example (see :func:`fit_tag`). pool: (m,) int64 catalogue
    ids (or rows) to sample from, ascending; ``rows(ids)`` returns their vectors (k, d); ``exclude``: ids
    that are examples. Returns the model and the sampled ids (ascending).
    """
    sampled = sample_unlabelled(pool, exclude)
    U = rows(sampled) if len(sampled) else np.zeros((0, stats.dim), np.float32)
    # The fit solves many tiny systems: BLAS threads only add contention there (5-10x slower on a busy
    # machine), and one thread makes the result independent of the machine's thread count.
    with one_blas_thread():
        try:
            model = fit_tag(X_pos, X_neg, U, stats, method=method, groups=groups, rule=rule)
        except TagError as exc:
            raise TagError(f"tag {tag!r}: {exc}") from None
    return model, sampled
