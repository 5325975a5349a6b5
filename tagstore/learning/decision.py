"""Decisions of a learned tag: grouped folds, calibration of out-of-fold scores, and the threshold rule.

A fit cross-validates on folds that never split a group (a track, an album: whatever the caller says
belongs together). Each training row then has an out-of-fold (OOF) z-score. The negatives a fit sees
are mostly a sample of the catalogue, which holds tagged tracks too (the positive-unlabelled setting),
so the catalogue sample (sampled negatives out of fold, reference tracks under the final model) is used
as what it is:

* **Base rate** ``prior``: mixture proportion estimation (Blanchard, Lee & Scott 2010): the catalogue's
  score distribution contains the positives' at weight prior, so prior <= q(t) / recall(t) at every
  cut t, where q(t) is the share of the catalogue sample at or above t and recall(t) the share of OOF
  positives; the estimate is the least such ratio over cuts keeping at least half the positives, within
  [positives / catalogue size, 0.5].
* **Expected precision and recall** at t on the catalogue: recall(t), and precision(t) =
  prior * recall(t) / q(t), at most 1 (q gets half a track added, so a few hundred sampled tracks never
  promise perfection).
* **Calibration** (Platt 1999, with his smoothed targets): ``llr(z) = a*z + b`` fitted by logistic
  regression of OOF positives against OOF negatives, both classes weighted equally: the log ratio of the
  positives' score density to the negatives'. A score reads as a probability
  ``p = min(1, prior * exp(llr(z)))`` (the positive-unlabelled posterior, prior * f+(z) / f(z)).
* **The rule** (:class:`Rule`): ``f1`` (default) maximises the expected F1; ``precision`` takes the
  lowest threshold whose expected precision reaches the value (the highest-precision one when none
  does); ``probability`` predicts where the calibrated probability reaches the value. Thresholds from
  OOF scores sit midway between the lowest score kept and the next lower one.

Everything here is deterministic: no random numbers, so the same rows give the same decision.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from tagstore.errors import TagError

RULES = ("f1", "precision", "probability")
PLATT_MIN_SLOPE = 1e-3
"""Calibration slope floor (per z unit): OOF scores that rank no better than chance give a flat p."""


@dataclass(frozen=True)
class Rule:
    """How a tag's threshold is chosen: ``f1``, ``precision`` (value: the expected precision to reach)
    or ``probability`` (value: the calibrated probability from which a track is predicted)."""

    kind: str = "f1"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise TagError(f"unknown threshold rule {self.kind!r}; use one of {', '.join(RULES)}")
        if self.kind == "f1":
            return
        v = self.value
        what = "--precision" if self.kind == "precision" else "the threshold"
        if v is None or not np.isfinite(v) or not 0.0 < v < 1.0 + (self.kind == "precision"):
            top = "1]" if self.kind == "precision" else "1)"
            raise TagError(f"{what} {v} is not a probability; give a value in (0, {top}, e.g. 0.9")

    @classmethod
    def of(cls, threshold: float | None = None, precision: float | None = None) -> Rule:
        """The rule of ``--threshold X`` / ``--precision P`` (neither: the default, F1)."""
        if threshold is not None and precision is not None:
            raise TagError("give either --threshold or --precision, not both")
        if threshold is not None:
            return cls("probability", float(threshold))
        if precision is not None:
            return cls("precision", float(precision))
        return cls()

    def describe(self) -> str:
        """``f1``, ``precision>=0.9`` or ``p>=0.3``."""
        if self.kind == "f1":
            return "f1"
        return f"{'precision' if self.kind == 'precision' else 'p'}>={self.value:g}"


@dataclass(frozen=True)
class Calibration:
    """``p = min(1, prior * exp(a*z + b))`` for a z-score z (see the module docstring)."""

    a: float
    b: float
    prior: float

    def probability(self, z: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (same shape as ``z``), float64."""
        llr = self.a * np.asarray(z, dtype=np.float64) + self.b
        return np.exp(np.minimum(np.log(self.prior) + llr, 0.0))

    def z_at(self, p: float) -> float:
        """The z-score whose calibrated probability is ``p`` (0 < p < 1)."""
        return (np.log(p / self.prior) - self.b) / self.a


@dataclass(frozen=True, eq=False)
class OutOfFold:
    """Held-out z-scores of a fit: ``pos`` (p,) positives out of fold; ``neg`` (n,) negatives out of fold
    with weights ``w`` (n,) (a user's negative 1, a sampled track its unlabelled weight); ``catalogue``
    (c,) the catalogue sample (sampled tracks out of fold, reference tracks under the final model)."""

    pos: np.ndarray
    neg: np.ndarray
    w: np.ndarray
    catalogue: np.ndarray

    def rates(self, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(recall, q) of ``z >= c`` for cuts (m,): the share of positives and the (smoothed: + half a
        track) share of the catalogue sample at or above each cut."""
        cuts = np.asarray(cuts, dtype=np.float64)
        recall = (self.pos[None, :] >= cuts[:, None]).mean(axis=1)
        q = ((self.catalogue[None, :] >= cuts[:, None]).sum(axis=1) + 0.5) / (self.catalogue.size + 1.0)
        return recall, q

    def operating_point(self, t: float, prior: float) -> tuple[float, float]:
        """Expected (precision, recall) on the catalogue of predicting ``z >= t``."""
        recall, q = self.rates(np.array([t]))
        return float(min(1.0, prior * recall[0] / q[0])), float(recall[0])

    def cuts(self) -> np.ndarray:
        """Every distinct held-out score, descending."""
        return np.unique(np.concatenate([self.pos, self.neg, self.catalogue]))[::-1]


def grouped_folds(groups: Sequence[Hashable], k: int) -> np.ndarray:
    """Fold ids in [0, k) for rows (n,) so that rows of one group always share a fold.

    Groups are dealt round-robin in order of first appearance: list the positives first and each of the
    first k positive groups lands in its own fold (and the folds stay stratified). Deterministic.
    """
    fold_of: dict[Hashable, int] = {}
    for g in groups:
        if g not in fold_of:
            fold_of[g] = len(fold_of) % k
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def platt(oof: OutOfFold) -> tuple[float, float]:
    """(a, b) of ``llr(z) = a*z + b`` fitted on OOF positives against OOF negatives (both classes weighted
    equally, Platt's targets (N+ + 1)/(N+ + 2) and 1/(N- + 2)); a is floored at :data:`PLATT_MIN_SLOPE`."""
    n_pos, n_neg = oof.pos.size, oof.neg.size
    z = np.concatenate([oof.pos, oof.neg])
    w = np.concatenate([np.full(n_pos, 0.5 / n_pos), 0.5 * oof.w / oof.w.sum()])
    t = np.concatenate([np.full(n_pos, (n_pos + 1.0) / (n_pos + 2.0)), np.full(n_neg, 1.0 / (n_neg + 2.0))])
    A = np.column_stack([z, np.ones_like(z)])
    theta = np.zeros(2)
    for _ in range(100):
        p = _sigmoid(A @ theta)
        grad = A.T @ (w * (p - t)) + 1e-6 * theta
        H = (A * (w * p * (1 - p))[:, None]).T @ A + 1e-6 * np.eye(2)
        step = np.linalg.solve(H, grad)
        theta -= step
        if np.abs(step).max() < 1e-12:
            break
    return max(float(theta[0]), PLATT_MIN_SLOPE), float(theta[1])


def base_rate(oof: OutOfFold, low: float, high: float = 0.5) -> float:
    """The share of the catalogue carrying the tag: the least q(t) / recall(t) over cuts keeping at least
    half the positives, within [low, high] (see the module docstring)."""
    low = min(max(low, 1e-6), high)
    cuts = np.unique(oof.pos)
    recall, q = oof.rates(cuts)
    keep = recall >= 0.5
    return float(np.clip((q[keep] / recall[keep]).min(), low, high)) if keep.any() else low


def _midway(values: np.ndarray, j: int) -> float:
    """Midway between distinct descending ``values[j]`` and the next, or ``values[j]`` itself if last."""
    return float(0.5 * (values[j] + values[j + 1])) if j + 1 < values.size else float(values[j])


def choose_threshold(oof: OutOfFold, calibration: Calibration, rule: Rule) -> float:
    """The z threshold of ``rule`` (see the module docstring)."""
    if rule.kind == "probability":
        return calibration.z_at(float(rule.value))
    cuts = oof.cuts()  # predict z >= cut
    recall, q = oof.rates(cuts)
    prec = np.minimum(1.0, calibration.prior * recall / q)
    if rule.kind == "f1":
        with np.errstate(invalid="ignore"):
            f1 = np.nan_to_num(2 * prec * recall / (prec + recall))
        return _midway(cuts, int(np.argmax(f1)))  # argmax: the highest cut among equals
    reach = np.flatnonzero(prec >= float(rule.value) - 1e-12)
    return _midway(cuts, int(reach[-1]) if reach.size else int(np.argmax(prec)))


MODEL_TAGS_PER_TRACK = 3
"""Model tags: each track's top-scoring tags share out the predictions (musicnn's own ``top_tags`` default)."""


def top_share_thresholds(S: np.ndarray, per_track: int = MODEL_TAGS_PER_TRACK) -> np.ndarray:
    """Per-tag thresholds (T,) float64 for a model's tag scores ``S`` (n tracks, T tags).

    The rule: the catalogue gets as many (track, tag) predictions as its tracks have top-``per_track``
    tags, and each tag keeps the share of them it wins, taken by its own score: a tag in the top
    ``per_track`` of m tracks is predicted for its m highest-scoring tracks (its threshold is its m-th
    highest score). A tag in nobody's top gets a threshold above its highest score (predicts nothing).
    """
    S = np.asarray(S, dtype=np.float64)
    n, T = S.shape
    out = np.full(T, np.inf)
    if n == 0 or T == 0:
        return out
    top = np.argsort(-S, axis=1, kind="stable")[:, : min(per_track, T)]
    wins = np.bincount(top.ravel(), minlength=T)
    ranked = -np.sort(-S, axis=0)  # each column descending
    for t in np.flatnonzero(wins):
        out[t] = ranked[wins[t] - 1, t]
    rest = wins == 0
    out[rest] = np.nextafter(ranked[0, rest].astype(np.float32), np.float32(np.inf)).astype(np.float64)
    return out
