"""Similarity search: nearest tracks to a stored track or to an audio file embedded on the fly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.errors import InputError, TrackNotFoundError
from tagstore.vectors import index_vectors, open_index


@dataclass
class Hit:
    """One search result; ``score`` is cosine similarity of index vectors, in [-1, 1]."""

    rank: int
    id: int
    path: str
    title: str | None
    artist: str | None
    album: str | None
    duration_s: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Query:
    """What a search was asked for: a stored track (``track_id``) or an outside file (``path``)."""

    text: str
    track_id: int | None
    path: str | None


def _resolve_query(store: Any, query: str | int | Path, con: Any) -> tuple[Query, np.ndarray | None]:
    """The stored raw vector for a catalogue track, or None with the file path to embed."""
    text = str(query)
    try:
        track = store.resolve(text, con)
    except TrackNotFoundError:
        path = Path(text).expanduser()
        if path.is_file():
            return Query(text, None, str(path.absolute())), None
        if path.exists():
            raise InputError(f"{text} is a folder; give a track id, a stored path or one audio file") from None
        raise TrackNotFoundError(
            f"no track {text!r} in the store and no such file; give a catalogue id, a stored path "
            "or an audio file (see `tagstore tracks`)"
        ) from None
    return Query(text, track.id, track.path), store.embeddings([track.id], con)


def similar(
    store: Any,
    query: str | int | Path | None = None,
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
    include = None if include_ids is None else set(int(i) for i in include_ids)
    excludes = set(int(i) for i in exclude_ids or ())
    if with_tags or without_tags:
        from tagstore import tagging

        for name in with_tags:
            ids = set(tagging.predicted_ids(store, name).tolist())
            include = ids if include is None else include & ids
        for name in without_tags:
            excludes |= set(tagging.predicted_ids(store, name).tolist())
    with store.session():
        return _search(store, query, k, include, excludes, tag)


def _search(
    store: Any, query: Any, k: int, include: set[int] | None, excludes: set[int], tag: str | None
) -> tuple[Query, list[Hit]]:
    index, record = open_index(store)
    with store.reader() as con:
        if tag is not None:
            from tagstore import tagging

            q, vec = Query(f"tag:{tag}", None, None), tagging.prototype_query(store, tag, record)
        else:
            q, raw = _resolve_query(store, query, con)
            if raw is None:
                from tagstore.embedding import TrackEmbedder

                raw = TrackEmbedder.from_layout(store.layout).embed_file(q.path).vector[None, :]
            vec = index_vectors(store, raw, record)
        if q.track_id is not None:
            excludes.add(q.track_id)
        if include is not None:
            include -= excludes
            if not include:
                return q, []
        scores, ids = index.search(
            vec,
            k,
            include_ids=None if include is None else np.asarray(sorted(include), dtype=np.int64),
            exclude_ids=np.asarray(sorted(excludes), dtype=np.int64) if excludes and include is None else None,
        )
        return q, hits_for(con, scores[0], ids[0])


def hits_for(con: Any, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    """Search results ``(k,)`` scores and ids (-1 = none) joined with their catalogue rows."""
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    if not len(ids):
        return []
    rows = con.execute(
        "SELECT id, path, title, artist, album, duration_s FROM tracks WHERE id IN (SELECT unnest(?::BIGINT[]))",
        [ids.tolist()],
    ).fetchall()
    meta = {r[0]: r[1:] for r in rows}
    # A stale index (another process is writing) may still hold a removed track: leave it out.
    found = [(tid, score) for tid, score in zip(ids.tolist(), scores.tolist()) if tid in meta]
    return [
        Hit(rank, tid, *meta[tid][:4], duration_s=meta[tid][4], score=float(score))
        for rank, (tid, score) in enumerate(found, start=1)
    ]
