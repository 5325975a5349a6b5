"""What a candidate threshold would predict, and a tag's score distribution (the web page's slider).

Setting a threshold is :mod:`tagstore.tags.decisions` (one place changes the ``tags`` row, the model it
carries and the predictions together).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tagstore.catalogue import tags as tag_sql
from tagstore.errors import InputError
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_tag
from tagstore.tags.views import list_tags


def finite_threshold(threshold: float) -> float:
    """``threshold`` as a float, or InputError when it is NaN or infinite."""
    value = float(threshold)
    if not math.isfinite(value):
        raise InputError(f"threshold {threshold!r} is not a finite number; give one such as 0.5")
    return value


def count_at_least(store: Store, name: str, threshold: float) -> int:
    """How many tracks a tag would predict at ``threshold``."""
    value = finite_threshold(threshold)
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
