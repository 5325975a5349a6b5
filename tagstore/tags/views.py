"""Tags as listed: summaries (``tagstore tags``) and a tag's tracks by score (``tagstore scores``)."""

from __future__ import annotations

from collections.abc import Sequence
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.learning import TagModel
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_tag

log = logging.getLogger("tagstore")


@dataclass
class TagSummary:
    """A tag as listed by ``tagstore tags``."""

    name: str
    kind: str
    method: str | None
    n_pos: int
    n_neg: int
    threshold: float | None
    cv_ap: float | None
    predicted: int
    scored: int
    trained_at: str | None
    rule: str | None = None  # how the threshold was chosen (see tagstore.learning.decision; model tags: top, fixed)
    rule_value: float | None = None
    threshold_p: float | None = None  # the threshold as a probability
    expected_precision: float | None = None  # on the catalogue, from cross-validation (learned tags)
    expected_recall: float | None = None
    cv_ap_std: float | None = None  # spread (std over folds) of cv_ap
    base_rate: float | None = None  # estimated share of the catalogue carrying the tag
    fit_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoredTrack:
    """A track's score for one tag; ``predicted`` is score >= the tag's threshold."""

    rank: int
    id: int
    path: str
    title: str | None
    artist: str | None
    duration_s: float
    score: float
    predicted: bool
    probability: float | None = None  # calibrated (learned tags) or the model's own output (model tags)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_text(rule: str | None, value: float | None) -> str:
    """How a summary shows its rule: ``f1``, ``precision>=0.9``, ``p>=0.3``, ``top``, ``fixed``."""
    if rule in ("precision", "probability") and value is not None:
        return f"{'precision' if rule == 'precision' else 'p'}>={value:g}"
    return rule or "f1"


def list_tags(
    store: Store, con: Connection | None = None, names: Sequence[str] | None = None, kind: str | None = None
) -> list[TagSummary]:
    """Every tag (or those named) with its examples, method, threshold, predicted count and CV AP."""
    if con is None:
        with store.reader() as c:
            return list_tags(store, c, names, kind)
    return [TagSummary(*r) for r in tag_sql.summaries(con, names, kind)]


def scores(
    store: Store, name: str, top: int | None = 20, predicted_only: bool = False, exclude_examples: bool = False
) -> list[ScoredTrack]:
    """Tracks by descending score for a tag (learned or model); ``top=None`` lists all.

    ``exclude_examples`` leaves out the tag's own examples (to see what it found, not what it was shown).
    """
    with store.reader() as con:
        row = require_tag(con, name)
        rows = tag_sql.top_scores(con, row.id, top, predicted_only, exclude_examples)
    if predicted_only and not rows:
        log.warning("tag %r predicts no track; lower its threshold with `tagstore threshold %s VALUE`", name, name)
    if row.kind == "model":
        probs = [float(r[5]) for r in rows]
    else:
        model = TagModel.from_bytes(row.model) if row.model is not None else None
        p = model.probability(np.array([r[5] for r in rows])) if model is not None else np.full(len(rows), np.nan)
        probs = [float(v) if np.isfinite(v) else None for v in p]
    return [ScoredTrack(i, *r, probability=pr) for i, (r, pr) in enumerate(zip(rows, probs), start=1)]


def predicted_ids(store: Store, name: str) -> np.ndarray:
    """Catalogue ids predicted to carry the tag (learned or model)."""
    with store.reader() as con:
        return tag_sql.predicted_ids(con, require_tag(con, check_tag_name(name)).id)


def score_table(store: Store, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every stored score of a tag (learned or model): ids ``(n,)`` int64 ascending, scores ``(n,)`` float64."""
    with store.reader() as con:
        return tag_sql.score_table(con, require_tag(con, check_tag_name(name)).id)
