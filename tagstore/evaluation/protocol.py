"""The few-shot evaluation protocol (after Ma & Lerch 2024) as pure logic over a label table.

For each tag, each K in ``shots`` and each draw, K training positives are drawn from the TRAIN split —
one clip per distinct track first, a track's second clip only once every positive track has given one —
and negatives from the train clips without the tag. The test split is never drawn from: it is the
evaluation set, and the tags evaluated are those with positives and negatives in it (and in train). A
``full-train`` draw (``k=None``: every train positive and negative) gives the ceiling.

Draws are nested: within one (tag, draw) the K=2 positives start with the K=1 positive, and so on, so a
learning curve varies K alone. Each (seed, tag, draw) has its own random stream, so adding a tag or a
clip of another tag leaves other tags' draws unchanged.

Results (:class:`Result`: one tag's AP, ROC-AUC and F1 at the fit's threshold for one embedder, method, K
and draw) are aggregated
by :func:`aggregate`: macro over tags within a draw, then mean ± std (population, ddof=0) over draws.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tagstore.learning import metrics

SPLITS = ("train", "test")
DEFAULT_SHOTS = (1, 2, 5, 10, 20)
"""Training positives per tag in a draw: the K of the paper's learning curves."""


@dataclass(frozen=True)
class LabelledClip:
    """One row of the label table: a clip id (catalogue id or path), its track, tags and split."""

    id: Hashable
    track: str
    tags: frozenset[str]
    split: str  # "train" | "test"


@dataclass(frozen=True)
class Draw:
    """The training examples of one tag for one K and draw; ``k=None`` is the full-train ceiling."""

    tag: str
    k: int | None
    draw: int
    pos_ids: tuple[Hashable, ...]
    neg_ids: tuple[Hashable, ...]

    @property
    def full(self) -> bool:
        return self.k is None

    @property
    def short(self) -> bool:
        """True when the train split had fewer than K positives, so all of them were used."""
        return self.k is not None and len(self.pos_ids) < self.k


@dataclass(frozen=True)
class FewShotPlan:
    """The protocol for one label table: evaluated tags, the evaluation set and the draws."""

    tags: tuple[str, ...]  # evaluated tags, sorted
    eval_ids: tuple[Hashable, ...]  # the test split, in a fixed order
    eval_tags: tuple[frozenset[str], ...]  # tags of each eval clip, aligned with eval_ids
    draws: tuple[Draw, ...]
    skipped: dict[str, str]  # tag → why it is not evaluated

    def truth(self, tag: str) -> np.ndarray:
        """(len(eval_ids),) bool: which evaluation clips carry ``tag``."""
        return np.array([tag in t for t in self.eval_tags], dtype=bool)


@dataclass(frozen=True)
class Result:
    """One evaluated (embedder, method, K, draw, tag): AP and ROC-AUC on the evaluation set."""

    embedder: str
    method: str
    k: int | None  # None: full-train ceiling
    draw: int
    tag: str
    ap: float
    auc: float
    f1: float | None = None  # F1 of the predicted set (scores >= the fit's threshold) on the evaluation set


@dataclass(frozen=True)
class CurvePoint:
    """Macro AP / ROC-AUC of one (embedder, method, K): mean and std over draws."""

    embedder: str
    method: str
    k: int | None
    n_draws: int
    n_tags: int  # tags in each draw's macro average (the largest, if draws differ)
    ap_mean: float
    ap_std: float
    auc_mean: float
    auc_std: float
    f1_mean: float | None = None  # None when the results carry no F1
    f1_std: float | None = None


def _stream(seed: int, tag: str, draw: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(tag.encode()), draw]))


def _spread(clips: Sequence[LabelledClip], rng: np.random.Generator) -> list[Hashable]:
    """Clip ids ordered so that tracks come round-robin: every track once, then seconds, and so on."""
    by_track: dict[str, list[Hashable]] = defaultdict(list)
    for c in clips:
        by_track[c.track].append(c.id)
    tracks = sorted(by_track)
    rng.shuffle(tracks)
    queues = [list(rng.permutation(len(by_track[t]))) for t in tracks]
    out: list[Hashable] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        out += [by_track[t][q[depth]] for t, q in zip(tracks, queues) if depth < len(q)]
    return out


def _table(clips: Iterable[LabelledClip]) -> list[LabelledClip]:
    table = sorted(clips, key=lambda c: (str(c.id), repr(c.id)))
    ids = [c.id for c in table]
    if len(set(ids)) != len(ids):
        raise ValueError("clip ids must be unique in the label table")
    bad = {c.split for c in table} - set(SPLITS)
    if bad:
        raise ValueError(f"unknown split(s) {sorted(bad)}: use 'train' or 'test'")
    return table


def few_shot_plan(clips: Iterable[LabelledClip], shots: Sequence[int] = DEFAULT_SHOTS,
                  n_draws: int = 5, seed: int = 0, neg_per_pos: int | None = None,
                  full_train: bool = True, tags: Iterable[str] | None = None,
                  short: str = "keep") -> FewShotPlan:
    """Draw the few-shot training sets for every evaluable tag.

    clips: the label table; ids unique. shots: the K values. n_draws: draws per (tag, K).
    neg_per_pos: negatives per draw = ``neg_per_pos * K`` train clips without the tag (track-spread
    like the positives, capped at what exists); None (default) takes every such train clip, as the
    full-train ceiling does. tags: restrict to these (default: every tag in the table).
    short: what to do when a tag has fewer than K train positives — "keep" uses them all (the draw's
    ``short`` is True), "skip" leaves that (tag, K) out.
    """
    if short not in ("keep", "skip"):
        raise ValueError(f"short={short!r}: use 'keep' or 'skip'")
    if any(int(k) < 1 for k in shots) or n_draws < 1:
        raise ValueError("every K in shots and n_draws must be at least 1")
    table = _table(clips)
    train = [c for c in table if c.split == "train"]
    test = [c for c in table if c.split == "test"]
    wanted = sorted(set(tags) if tags is not None else {t for c in table for t in c.tags})
    evaluated, skipped, draws = [], {}, []
    for tag in wanted:
        pos = [c for c in train if tag in c.tags]
        neg = [c for c in train if tag not in c.tags]
        n_test_pos = sum(tag in c.tags for c in test)
        reason = ("no positives in the test split" if n_test_pos == 0 else
                  "no negatives in the test split" if n_test_pos == len(test) else
                  "no positives in the train split" if not pos else
                  "no negatives in the train split" if not neg else "")
        if reason:
            skipped[tag] = reason
            continue
        evaluated.append(tag)
        for d in range(n_draws):
            rng = _stream(seed, tag, d)
            pos_order, neg_order = _spread(pos, rng), _spread(neg, rng)
            for k in sorted(set(int(k) for k in shots)):
                if k > len(pos) and short == "skip":
                    continue
                n_neg = len(neg) if neg_per_pos is None else neg_per_pos * k
                draws.append(Draw(tag, k, d, tuple(pos_order[:k]), tuple(neg_order[:n_neg])))
        if full_train:
            draws.append(Draw(tag, None, 0, tuple(c.id for c in pos), tuple(c.id for c in neg)))
    return FewShotPlan(tuple(evaluated), tuple(c.id for c in test), tuple(c.tags for c in test),
                       tuple(draws), skipped)


def f1_at(y: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of a predicted set ``predicted`` (n,) bool against ``y`` (n,) bool (0 when nothing is right)."""
    tp = float(np.sum(y & predicted))
    return 2 * tp / max(float(y.sum() + predicted.sum()), 1.0)


def score_draw(plan: FewShotPlan, draw: Draw, scores, embedder: str, method: str,
               threshold: float = float("nan")) -> Result:  # fmt: skip
    """A :class:`Result` from ``scores`` (len(plan.eval_ids),) float: the draw's model on the eval set;
    F1 of ``scores >= threshold`` (the model's decision) beside the ranking metrics."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(plan.eval_ids),):
        raise ValueError(f"scores must have shape ({len(plan.eval_ids)},); got {s.shape}")
    y = plan.truth(draw.tag)
    f1 = f1_at(y, s >= threshold) if np.isfinite(threshold) else None
    return Result(embedder, method, draw.k, draw.draw, draw.tag,
                  metrics.average_precision(y, s), metrics.roc_auc(y, s), f1)


def _k_order(k: int | None) -> float:
    return float("inf") if k is None else float(k)


def aggregate(results: Iterable[Result]) -> list[CurvePoint]:
    """Macro AP and ROC-AUC per (embedder, method, K): the mean over tags within each draw, then mean
    and population std over draws. Sorted by embedder, method, K (full-train last)."""
    cells: dict[tuple, dict[int, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        cells[(r.embedder, r.method, r.k)][r.draw].append(r)
    points = []
    for (emb, method, k), by_draw in cells.items():
        ap = np.array([np.mean([r.ap for r in rs]) for rs in by_draw.values()])
        auc = np.array([np.mean([r.auc for r in rs]) for rs in by_draw.values()])
        with_f1 = all(r.f1 is not None for rs in by_draw.values() for r in rs)
        f1 = np.array([np.mean([r.f1 for r in rs]) for rs in by_draw.values()]) if with_f1 else None
        n_tags = max(len({r.tag for r in rs}) for rs in by_draw.values())
        points.append(CurvePoint(emb, method, k, len(by_draw), n_tags, float(ap.mean()),
                                 float(ap.std()), float(auc.mean()), float(auc.std()),
                                 None if f1 is None else float(f1.mean()), None if f1 is None else float(f1.std())))
    return sorted(points, key=lambda p: (p.embedder, p.method, _k_order(p.k)))


def per_tag_ap(results: Iterable[Result]) -> dict[tuple[str, str], dict[str, dict[int | None,
                                                                                  tuple[float, float]]]]:
    """(embedder, method) → tag → K → (mean, population std) of AP over draws."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        cells[(r.embedder, r.method, r.tag, r.k)].append(r.ap)
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (emb, method, tag, k), aps in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2], _k_order(kv[0][3]))):
        out[(emb, method)][tag][k] = (float(np.mean(aps)), float(np.std(aps)))
    return {key: dict(tags) for key, tags in out.items()}
