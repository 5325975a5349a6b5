"""Similarity search: nearest tracks to a stored track, an audio file embedded on the fly, or a tag's prototype."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.records import IndexRecord
from tagstore.derived.index import index_vectors, open_index
from tagstore.errors import InputError, TagError
from tagstore.store import OutsideFile, Store
from tagstore.tags.examples import check_tag_name, require_learned, require_tag


MAX_RESULTS = 1000
"""The most rows one text or tag search returns."""

log = logging.getLogger("tagstore")


@dataclass
class Hit:
    """One search result; ``score`` is cosine similarity of index vectors, in [-1, 1] (a tag search: the
    tag's score; a text search: None)."""

    rank: int
    id: int
    path: str
    title: str | None
    artist: str | None
    album: str | None
    duration_s: float
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Query:
    """What a search was asked for: a stored track (``track_id``), an outside file (``path``) or a tag."""

    text: str
    track_id: int | None
    path: str | None


def _tag_ids(con: Connection, names: Sequence[str]) -> list[int]:
    return [require_tag(con, name).id for name in names]


def text_search(
    store: Store, text: str, limit: int = 50, offset: int = 0,
    with_tags: Sequence[str] = (), without_tags: Sequence[str] = (),
) -> list[Hit]:  # fmt: skip
    """Tracks whose title, artist, album or path contains every word of ``text`` (case-insensitive), with
    the tag filters of :func:`similar`; ``score`` is None (the order is artist, album, title)."""
    if not 1 <= limit <= MAX_RESULTS or offset < 0:
        raise InputError(f"limit must be between 1 and {MAX_RESULTS} and offset at least 0, got {limit}, {offset}")
    with store.reader() as con:
        rows = track_sql.text_search(con, text.split(), limit, offset, _tag_ids(con, with_tags), _tag_ids(con, without_tags))
    return [Hit(rank, r[0], *r[1:5], duration_s=r[5], score=None) for rank, r in enumerate(rows, start=offset + 1)]


def by_tag(
    store: Store, name: str, limit: int = 50, with_tags: Sequence[str] = (), without_tags: Sequence[str] = ()
) -> list[Hit]:
    """Tracks by descending score for a tag (learned or model), with the tag filters of :func:`similar`;
    ``score`` is the tag's score."""
    if not 1 <= limit <= MAX_RESULTS:
        raise InputError(f"limit must be between 1 and {MAX_RESULTS}, got {limit}")
    with store.reader() as con:
        tag_id = require_tag(con, check_tag_name(name)).id
        rows = tag_sql.ranked(con, tag_id, limit, _tag_ids(con, with_tags), _tag_ids(con, without_tags))
    return [Hit(rank, r[0], *r[1:5], duration_s=r[5], score=float(r[6])) for rank, r in enumerate(rows, start=1)]


def tag_filter(
    store: Store, with_tags: Sequence[str], without_tags: Sequence[str]
) -> tuple[set[int] | None, set[int]]:
    """The ids a search may return (None: any) and the ids it must not, from tag predictions."""
    include: set[int] | None = None
    excludes: set[int] = set()
    with store.reader() as con:
        for name in with_tags:
            ids = set(tag_sql.predicted_ids(con, require_tag(con, name).id).tolist())
            if not ids:
                log.warning("tag %r predicts no track, so --with-tag %s matches nothing; lower its threshold "
                            "with `tagstore threshold %s VALUE`", name, name, name)  # fmt: skip
            include = ids if include is None else include & ids
        for name in without_tags:
            excludes |= set(tag_sql.predicted_ids(con, require_tag(con, name).id).tolist())
    return include, excludes


def similar(
    store: Store,
    query: str | int | os.PathLike[str] | None = None,
    k: int = 10,
    include_ids: Sequence[int] | None = None,
    exclude_ids: Sequence[int] | None = None,
    tag: str | None = None,
    with_tags: Sequence[str] = (),
    without_tags: Sequence[str] = (),
) -> tuple[Query, list[Hit]]:
    """The ``k`` stored tracks most similar to ``query`` (a stored track is not its own neighbour).

    ``tag`` searches from a learned tag's prototype instead of a track. ``with_tags``/``without_tags``
    keep only tracks predicted (not) to carry each tag; like ``include_ids``/``exclude_ids`` they
    restrict the search itself inside the index, so a filter never truncates the result list below
    ``k`` while enough tracks match.
    """
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    if (query is None) == (tag is None):
        raise InputError("give either a track to search from or --tag NAME, not both")
    include = None if include_ids is None else {int(i) for i in include_ids}
    excludes = {int(i) for i in exclude_ids or ()}
    if with_tags or without_tags:
        tagged, untagged = tag_filter(store, with_tags, without_tags)
        include = tagged if include is None else (include if tagged is None else include & tagged)
        excludes |= untagged
    with store.session():
        return _search(store, query, k, include, excludes, tag)


def _search(
    store: Store, query: Any, k: int, include: set[int] | None, excludes: set[int], tag: str | None
) -> tuple[Query, list[Hit]]:
    index, record = open_index(store)
    with store.reader() as con:
        if tag is not None:
            q, vec = Query(f"tag:{tag}", None, None), prototype(store, con, tag, record)
        else:
            ref = store.resolve(query, con)
            if isinstance(ref, OutsideFile):
                q = Query(str(query), None, ref.path)
                raw = store.embedder().embed_file(ref.path).vector[None, :]
            else:
                q = Query(str(query), ref.id, ref.path)
                raw = store.embeddings([ref.id], con)
            vec = index_vectors(store, raw, record)
        if q.track_id is not None:
            excludes.add(q.track_id)
        if include is not None:
            include -= excludes
            if not include:
                return q, []
        scores, ids = index.search(
            vec,
            max(1, min(k, index.ntotal)),  # never more rows than the index holds
            include_ids=None if include is None else np.asarray(sorted(include), dtype=np.int64),
            exclude_ids=np.asarray(sorted(excludes), dtype=np.int64) if excludes and include is None else None,
        )
        return q, hits_for(con, scores[0], ids[0])


def prototype(store: Store, con: Connection, name: str, record: IndexRecord) -> np.ndarray:
    """A learned tag's positive prototype in index space: the normalised mean of its positives' index vectors (1, dim)."""
    tag_id = require_learned(con, check_tag_name(name))
    pos = tag_sql.example_ids(con, tag_id, label=1)
    raw = [store.embeddings(pos, con)] if pos else []
    raw += [np.frombuffer(b, dtype=np.float32)[None, :] for b in tag_sql.external_positive_vectors(con, tag_id)]
    if not raw:
        raise TagError(f"tag {name!r} has no positive examples")
    v = index_vectors(store, np.concatenate(raw), record).mean(axis=0, keepdims=True)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def hits_for(con: Connection, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    """Search results ``(k,)`` scores and ids (-1 = none) joined with their catalogue rows."""
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    if not len(ids):
        return []
    meta = track_sql.summary_rows(con, ids.tolist())
    # A stale index (another process is writing) may still hold a removed track: leave it out.
    found = [(tid, score) for tid, score in zip(ids.tolist(), scores.tolist()) if tid in meta]
    return [
        Hit(rank, tid, *meta[tid][:4], duration_s=meta[tid][4], score=float(score))
        for rank, (tid, score) in enumerate(found, start=1)
    ]
