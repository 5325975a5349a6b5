"""Ranking metrics, in numpy: average precision and ROC-AUC per tag and their macro averages over tags
(for evaluation), and the cross-validation helpers of tag learning (the F1 threshold, robust reference
constants).

Ties are handled as scikit-learn does (``average_precision_score``, ``roc_auc_score``): tied scores form
one threshold, so AP steps once per distinct score and ROC-AUC gives a tied positive/negative pair
half credit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]

MAD_TO_STD = 1.4826
"""Scales the median absolute deviation to the std of a normal distribution."""


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y_true and scores must both have shape (n,); got {y.shape} and {s.shape}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("y_true must be boolean (or 0/1)")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y, s


def _cumulative(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores sorted descending, and at each distinct score: its last position, true and false positives."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, yy = np.asarray(scores)[order], np.asarray(y, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tps = np.cumsum(yy)[last].astype(np.float64)
    fps = (last + 1) - tps
    return s, last, tps, fps


def average_precision(y_true, scores) -> float:
    """Average precision of ``scores`` (n,) float for ``y_true`` (n,) bool: the sum over distinct
    thresholds of (recall step) × precision, without interpolation. Raises ValueError with no
    positives (AP is undefined there)."""
    y, s = _check(y_true, scores)
    if not y.any():
        raise ValueError("average precision needs at least one positive in y_true")
    _, _, tps, fps = _cumulative(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve of ``scores`` (n,) float for ``y_true`` (n,) bool: the probability that
    a random positive outscores a random negative, ties counting one half (Mann-Whitney U with mid
    ranks). Raises ValueError unless both classes are present."""
    y, s = _check(y_true, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positives and negatives in y_true")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    ends = np.r_[starts[1:], ss.size]
    group = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(ss.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]  # mean of the 1-based ranks start+1 .. end
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


METRICS: dict[str, Metric] = {"ap": average_precision, "auc": roc_auc}


def evaluable(y_true) -> np.ndarray:
    """Which columns of ``y_true`` (n, t) bool hold both positives and negatives: (t,) bool."""
    y = np.asarray(y_true, dtype=bool)
    if y.ndim != 2:
        raise ValueError(f"y_true must have shape (n_clips, n_tags); got {y.shape}")
    return y.any(axis=0) & ~y.all(axis=0)


def per_tag(y_true, scores, metric: str | Metric = "ap") -> np.ndarray:
    """The metric ("ap", "auc" or a callable) of each column of ``y_true`` / ``scores`` (n, t):
    returns (t,) float64, NaN for tags without both positives and negatives."""
    fn = METRICS[metric] if isinstance(metric, str) else metric
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"y_true and scores must have the same shape; got {y.shape} and {s.shape}")
    ok = evaluable(y)
    return np.array([fn(y[:, j], s[:, j]) if ok[j] else np.nan for j in range(y.shape[1])])


def macro(y_true, scores, metric: str | Metric = "ap") -> float:
    """Mean of :func:`per_tag` over the tags that have both positives and negatives; NaN if none do."""
    values = per_tag(y_true, scores, metric)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def average_precision_or_nan(y: np.ndarray, scores: np.ndarray) -> float:
    """:func:`average_precision`, but NaN instead of an error when a fold has no positives."""
    y = np.asarray(y, dtype=bool)
    return average_precision(y, scores) if y.any() else float("nan")


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising F1 of ``scores >= t`` on labels ``y``; returns ``(t, F1)``.

    Among equal F1 the highest cut wins (fewer predicted positives). t is placed midway between the lowest
    score kept and the next lower score, so small shifts of a re-fitted model do not flip the boundary.
    """
    s, last, tps, fps = _cumulative(y, scores)
    f1 = 2 * tps / np.maximum(tps + fps + tps[-1], 1e-300)
    j = int(np.argmax(f1))
    kept = s[last[j]]
    t = 0.5 * (kept + s[last[j] + 1]) if last[j] + 1 < s.size else kept
    return float(t), float(f1[j])


def reference_constants(scores: np.ndarray) -> tuple[float, float]:
    """Robust centre and scale of reference scores (n,): median and 1.4826 * MAD.

    Falls back to the std, then to 1, when the MAD is zero (tiny or degenerate references). Robust, so
    the few positives a random catalogue sample may hold do not move the constants.
    """
    s = np.asarray(scores, dtype=np.float64)
    centre = float(np.median(s))
    scale = MAD_TO_STD * float(np.median(np.abs(s - centre)))
    if not scale > 1e-12 * max(1.0, abs(centre)):
        scale = float(s.std())
    if not scale > 1e-12 * max(1.0, abs(centre)):
        scale = 1.0
    return centre, scale
