"""A tag's decision threshold: set it by hand, and see what a candidate threshold would predict.

A learned tag's threshold lives twice, in the ``tags`` row and inside its model (which rescoring uses for
new tracks); :func:`set_threshold` changes both and recomputes the predictions in one transaction. A later
refit (a new example) chooses its threshold again by cross-validation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tagstore.catalogue import tags as tag_sql
from tagstore.errors import InputError
from tagstore.learning import TagModel
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_tag
from tagstore.tags.views import TagSummary, list_tags


def _value(threshold: float) -> float:
    value = float(threshold)
    if not math.isfinite(value):
        raise InputError(f"threshold {threshold!r} is not a finite number; give one such as 0.5")
    return value


def set_threshold(store: Store, name: str, threshold: float) -> TagSummary:
    """Make ``threshold`` the tag's decision threshold (score >= threshold is predicted). Writes: the
    caller holds the write lock."""
    name, value = check_tag_name(name), _value(threshold)
    with store.transaction() as con:
        row = require_tag(con, name)
        blob = None
        if row.kind == "learned" and row.model is not None:
            model = TagModel.from_bytes(bytes(row.model))
            blob = dataclasses.replace(model, threshold=value).to_bytes()
        tag_sql.set_threshold(con, row.id, value, blob)
        (summary,) = list_tags(store, con, names=[name])
    return summary


def count_at_least(store: Store, name: str, threshold: float) -> int:
    """How many tracks a tag would predict at ``threshold``."""
    value = _value(threshold)
    with store.reader() as con:
        return tag_sql.count_at_least(con, require_tag(con, check_tag_name(name)).id, value)


def histogram(store: Store, name: str, bins: int = 40) -> dict[str, Any]:
    """The distribution of a tag's scores: ``bins`` equal-width ``counts`` between ``edges`` (bins + 1),
    with the current threshold."""
    if not 1 <= bins <= 1000:
        raise InputError(f"bins must be between 1 and 1000, got {bins}")
    name = check_tag_name(name)
    with store.reader() as con:
        row = require_tag(con, name)
        _, scores = tag_sql.score_table(con, row.id)
        (summary,) = list_tags(store, con, names=[name])
    scores = scores[np.isfinite(scores)]
    if not scores.size:
        return {"edges": [], "counts": [], "threshold": summary.threshold, "scored": 0}
    counts, edges = np.histogram(scores, bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "threshold": summary.threshold,
            "scored": int(scores.size)}  # fmt: skip
