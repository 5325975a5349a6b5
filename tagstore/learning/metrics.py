"""Cross-validation helpers: stratified folds, average precision, the F1 threshold, reference constants."""

from __future__ import annotations

import numpy as np

from tagstore import metrics as tagstore_metrics

MAD_TO_STD = 1.4826
"""Scales the median absolute deviation to the std of a normal distribution."""


def stratified_folds(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id in [0, k) for each of n rows, stratified by ``groups`` (n,) int.

    Each group is shuffled and dealt round-robin, continuing where the previous group stopped, so fold
    sizes differ by at most one and a group (or run of consecutive groups) with >= k rows reaches every fold.
    """
    folds = np.empty(groups.shape[0], dtype=np.int64)
    offset = 0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        rng.shuffle(idx)
        folds[idx] = (np.arange(idx.size) + offset) % k
        offset += idx.size
    return folds


def _cumulative(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted scores (desc), and at each distinct score: its last position, true and false positives."""
    order = np.argsort(-scores, kind="mergesort")
    s, yy = scores[order], np.asarray(y, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(yy)[last].astype(np.float64)
    fps = (last + 1) - tps
    return s, last, tps, fps


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ``scores`` (n,) for labels ``y`` (n,) bool, as scikit-learn computes it
    (:func:`tagstore.metrics.average_precision`), but NaN instead of an error when a fold has no positives."""
    y = np.asarray(y, dtype=bool)
    return tagstore_metrics.average_precision(y, scores) if y.any() else float("nan")


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
