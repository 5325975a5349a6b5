"""Tag decisions in the store: ``tagstore threshold`` (learned and model tags) and the model tags' own
thresholds (:func:`tagstore.learning.decision.top_share_thresholds`, refreshed after ingest unless a
tag's threshold was set by hand)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue.tags import Decision
from tagstore.errors import TagError
from tagstore.learning import Rule, TagModel, rethreshold
from tagstore.learning.decision import MODEL_TAGS_PER_TRACK, top_share_thresholds
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_tag
from tagstore.tags.fitting import decision
from tagstore.tags.thresholds import finite_threshold
from tagstore.tags.views import TagSummary, list_tags


def set_threshold(store: Store, name: str, value: float | None = None, precision: float | None = None) -> TagSummary:
    """Set a tag's threshold: a probability ``value`` (learned tags: calibrated; model tags: the model's
    output), an expected ``precision`` (learned tags), or neither: back to the default rule. Kept by
    later refits. Writes: the caller holds the write lock."""
    name = check_tag_name(name)
    with store.transaction() as con:
        row = require_tag(con, name)
        if row.kind == "model":
            _set_model_threshold(con, row, name, value, precision)
        else:
            model = TagModel.from_bytes(row.model) if row.model is not None else None
            if model is None:
                raise TagError(f"tag {name!r} has no fitted model; add examples with `tagstore add-tag {name} -e ...`")
            new = rethreshold(model, Rule.of(value, precision))
            tag_sql.set_decision(con, row.id, new.threshold, decision(new), new.to_bytes())
        (summary,) = list_tags(store, con, names=[name])
    return summary


def set_score_threshold(store: Store, name: str, score: float) -> TagSummary:
    """Put a tag's threshold at ``score`` on its own score scale (the web page's slider over the score
    histogram). A calibrated learned tag keeps it as the probability there (so a later refit keeps the
    same probability); any other tag as the number itself. Writes: the caller holds the write lock."""
    name, value = check_tag_name(name), finite_threshold(score)
    with store.transaction() as con:
        row = require_tag(con, name)
        if row.kind == "model":
            tag_sql.set_decision(con, row.id, value, Decision("fixed", value, value))
        elif row.model is None:
            raise TagError(f"tag {name!r} has no fitted model; add examples with `tagstore add-tag {name} -e ...`")
        else:
            model = TagModel.from_bytes(bytes(row.model))
            p = float(model.probability(np.array([value]))[0])
            rule = Rule("probability", p) if 0.0 < p < 1.0 else model.rule
            new = dataclasses.replace(model, threshold=value, rule=rule)
            tag_sql.set_decision(con, row.id, value, decision(new), new.to_bytes())
        (summary,) = list_tags(store, con, names=[name])
    return summary


def _set_model_threshold(con: Connection, row: tag_sql.TagRow, name: str, value: float | None,
                         precision: float | None) -> None:  # fmt: skip
    if precision is not None:
        raise TagError(f"{name!r} is a model tag without cross-validation; give a threshold VALUE, not --precision")
    if value is None:
        refresh_model_thresholds(con, reset=[row.id])
        return
    Rule.of(value)  # checks the value is a probability
    tag_sql.set_decision(con, row.id, float(value), Decision("fixed", float(value), float(value)))


def refresh_model_thresholds(con: Connection, reset: list[int] | None = None) -> int:
    """Recompute the thresholds of model tags that keep the default rule (and of the tags ``reset``), from
    the catalogue's scores; returns how many changed. In the caller's transaction."""
    changed = 0
    for source in tag_sql.model_sources(con):
        tag_ids, rules, S = tag_sql.model_score_matrix(con, source)
        if not S.size:
            continue
        thresholds = top_share_thresholds(S, MODEL_TAGS_PER_TRACK)
        for tag_id, rule, t in zip(tag_ids.tolist(), rules, thresholds.tolist()):
            if rule == "fixed" and tag_id not in (reset or ()):
                continue
            tag_sql.set_decision(con, tag_id, t, Decision("top", float(MODEL_TAGS_PER_TRACK), min(t, 1.0)))
            changed += 1
    return changed


def refresh_model_tags(store: Store) -> int:
    """:func:`refresh_model_thresholds` in its own transaction (after ingest). The caller holds the write lock."""
    with store.transaction() as con:
        return refresh_model_thresholds(con)
