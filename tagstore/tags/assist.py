"""Neighbour assists for a learned tag: propagate it to near tracks, suggest what to label next, explain a score."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from tagstore import learning
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.derived.index import index_vectors, open_index
from tagstore.errors import TagError
from tagstore.learning import TagModel
from tagstore.store import Store
from tagstore.tags.examples import check_tag_name, require_learned, stored_examples


def _with_paths(store: Store, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not items:
        return items
    with store.reader() as con:
        paths = track_sql.paths(con, [i["id"] for i in items])
    return [{**i, "path": paths.get(i["id"])} for i in items]


def _model(con: Any, name: str) -> TagModel:
    ((_, _, blob),) = tag_sql.learned_models(con, [name])
    return TagModel.from_bytes(blob)


def propagate(store: Store, name: str, k: int = 10, limit: int | None = None) -> list[dict[str, Any]]:
    """Spread a tag to the nearest neighbours of its stored positive examples; stored as suggestions.

    Writes: the caller holds the write lock.
    """
    name = check_tag_name(name)
    index, record = open_index(store)
    with store.reader() as con:
        tag_id = require_learned(con, name)
        pos = tag_sql.example_ids(con, tag_id, label=1)
        if not pos:
            raise TagError(f"tag {name!r} has no stored positive examples to propagate from")
        negs = tag_sql.example_ids(con, tag_id, label=0)
        q = index_vectors(store, store.embeddings(pos, con), record)
    sims, nbrs = index.search(q, max(1, min(k + len(pos), index.ntotal)))
    found = learning.propagate(np.asarray(pos), nbrs, sims, exclude=negs, limit=limit)
    with store.transaction() as con:
        tag_sql.replace_suggestions(con, tag_id, [(s.id, s.score, s.sources) for s in found])
    return _with_paths(store, [{"id": s.id, "score": s.score, "sources": list(s.sources)} for s in found])


def suggest(store: Store, name: str, n: int = 10) -> list[dict[str, Any]]:
    """Tracks whose labels would most improve the tag: near its threshold, and unlike each other."""
    name = check_tag_name(name)
    with store.reader() as con:
        tag_id = require_learned(con, name)
        model = _model(con, name)
        ids, sc = tag_sql.score_table(con, tag_id)
        labelled = tag_sql.example_ids(con, tag_id)
        picked = learning.suggest(model, ids, sc, lambda sub: store.embeddings(sub.tolist(), con), n, exclude=labelled)
    by_id = dict(zip(ids.tolist(), sc.tolist()))
    return _with_paths(store, [{"id": int(i), "score": by_id[int(i)], "threshold": model.threshold} for i in picked])


def explain(store: Store, track: str, name: str, k: int = 3) -> dict[str, Any]:
    """Why a track got its score for a tag: nearest examples and the parts of the score."""
    name = check_tag_name(name)
    with store.reader() as con:
        tag_id = require_learned(con, name)
        model = _model(con, name)
        t = store.track(track, con)
        x = store.embeddings([t.id], con)[0]
        exs = stored_examples(con, tag_id)
        pos = [e.track_id for e in exs if e.label > 0 and e.track_id is not None]
        neg = [e.track_id for e in exs if e.label <= 0 and e.track_id is not None]
        pv = store.embeddings(pos, con) if pos else np.zeros((0, store.layout.dim), np.float32)
        nv = store.embeddings(neg, con) if neg else None
    exp = learning.explain(model, x, pv, nv, np.array(pos), np.array(neg) if neg else None, k=k)
    return {
        "track": {"id": t.id, "path": t.path},
        "tag": name,
        "method": model.method,
        "score": exp.score,
        "threshold": exp.threshold,
        "predicted": exp.predicted,
        "parts": exp.parts,
        "nearest_positive": [{"id": i, "cosine": c} for i, c in exp.nearest_positive],
        "nearest_negative": [{"id": i, "cosine": c} for i, c in exp.nearest_negative],
        "top_dimensions": [asdict(c) for c in exp.top_dimensions],
    }
