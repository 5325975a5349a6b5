"""Tags as listed: summaries (``tagstore tags``) and a tag's tracks by score (``tagstore scores``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_tag


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    return [ScoredTrack(i, *r) for i, r in enumerate(rows, start=1)]


def predicted_ids(store: Store, name: str) -> np.ndarray:
    """Catalogue ids predicted to carry the tag (learned or model)."""
    with store.reader() as con:
        return tag_sql.predicted_ids(con, require_tag(con, check_tag_name(name)).id)


def score_table(store: Store, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every stored score of a tag (learned or model): ids ``(n,)`` int64 ascending, scores ``(n,)`` float64."""
    with store.reader() as con:
        return tag_sql.score_table(con, require_tag(con, check_tag_name(name)).id)
