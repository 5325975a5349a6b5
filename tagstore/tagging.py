"""Learned tags in the store: examples in, a fitted model and a score for every track out.

The numerical core lives in :mod:`tagstore.learn`; this module resolves examples (catalogue ids,
stored paths, or outside audio files embedded on the fly), samples unlabelled catalogue tracks,
fits, scores the whole catalogue in chunks and persists everything in one transaction: a failure
anywhere leaves the tag exactly as it was.
"""

from __future__ import annotations

import hashlib
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.errors import InputError, TagError, TrackNotFoundError, UnknownTagError
from tagstore.store import Progress, Store

DEFAULT_METHOD = "auto"
AUTO_PROBE_FROM = 10
"""``auto`` fits the ensemble below this many positives and the probe from it on: on the demo corpus with
musicnn the ensemble wins at 1-5 examples and the linear probe at 10-20 (with dsp the probe wins or ties
at every K but 2); see the README's evaluation table."""
UNLABELLED_SAMPLE = 400
MAX_TAG_NAME = 200
SCORE_CHUNK = 16384


@dataclass
class Example:
    """A resolved example: a stored track (``track_id``) or an outside file (``path`` + its vector)."""

    label: int
    track_id: int | None
    path: str
    vector: np.ndarray | None = None
    content_hash: str | None = None


@dataclass
class TagSummary:
    """A learned tag as listed by ``tagstore tags``."""

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


def check_tag_name(name: str) -> str:
    """A tag name: trimmed, 1-200 printable characters (quotes, unicode and SQL are fine: all queries bind)."""
    clean = unicodedata.normalize("NFC", name.strip())
    if not clean:
        raise TagError("a tag name cannot be empty; give a name such as 'harpsichord'")
    if len(clean) > MAX_TAG_NAME:
        raise TagError(f"tag name {clean[:40]!r}... is {len(clean)} characters; use at most {MAX_TAG_NAME}")
    if any(unicodedata.category(ch).startswith("C") for ch in clean):
        raise TagError(f"tag name {clean!r} contains control characters; use printable text")
    return clean


def read_list_file(path: str | Path) -> list[str]:
    """Items from an examples file: one id or path per line; blank lines and ``#`` comments skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no examples file {p}; give a text file with one track id or path per line")
    items = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(line)
    return items


def _tag_row(con: Any, name: str) -> tuple[Any, ...] | None:
    """``(id, kind, method choice, model)`` of a tag, or None."""
    return con.execute("SELECT id, kind, coalesce(method_choice, method), model FROM tags WHERE name = ?", [name]).fetchone()


def resolve_method(choice: str, examples: list[Example]) -> str:
    """The method to fit: ``choice`` itself, or for ``auto`` the evaluation's winner at this many positives."""
    if choice != "auto":
        return choice
    return "ensemble" if sum(1 for e in examples if e.label > 0) < AUTO_PROBE_FROM else "probe"


def _require_learned(con: Any, name: str) -> int:
    row = _tag_row(con, name)
    if row is None:
        known = [r[0] for r in con.execute("SELECT name FROM tags WHERE kind = 'learned' ORDER BY name LIMIT 5").fetchall()]
        hint = f" (learned tags: {', '.join(known)})" if known else ""
        raise UnknownTagError(f"no tag {name!r} in the store{hint}; learn it with `tagstore add-tag {name} --examples ...`")
    if row[1] != "learned":
        raise TagError(f"{name!r} is a {row[1]} tag (scored by its model); it cannot be changed")
    return int(row[0])


def resolve_examples(store: Store, items: Sequence[str], label: int, con: Any) -> list[Example]:
    """Resolve ids/stored paths to tracks and outside files to embedded vectors; raises before any write."""
    out: list[Example] = []
    outside: list[Path] = []
    for item in items:
        try:
            track = store.resolve(item, con)
            out.append(Example(label, track.id, track.path))
        except TrackNotFoundError:
            path = Path(item).expanduser()
            if not path.is_file():
                raise TrackNotFoundError(
                    f"example {item!r} is neither a catalogue id, a stored path nor an audio file; "
                    "see `tagstore tracks`"
                ) from None
            outside.append(path)
    if outside:
        from tagstore import audio
        from tagstore.embedding import TrackEmbedder

        embedder = TrackEmbedder.from_layout(store.layout)
        for path in outside:
            vec = embedder.embed_file(path).vector  # AudioError names the file
            out.append(Example(label, None, str(path.absolute()), vec, audio.file_hash(path)))
    return out


def _stored_examples(con: Any, store: Store, tag_id: int) -> list[Example]:
    rows = con.execute(
        "SELECT e.track_id, e.label, t.path FROM tag_examples e JOIN tracks t ON t.id = e.track_id WHERE e.tag_id = ?",
        [tag_id],
    ).fetchall()
    out = [Example(int(label), int(tid), path) for tid, label, path in rows]
    for label, path, digest, blob in con.execute(
        "SELECT label, path, content_hash, vector FROM tag_external_examples WHERE tag_id = ?", [tag_id]
    ).fetchall():
        out.append(Example(int(label), None, path, np.frombuffer(blob, dtype=np.float32).copy(), digest))
    return out


def _merge(old: list[Example], new: list[Example]) -> list[Example]:
    """Later examples win: a track given again (maybe with the other label) replaces its old entry."""
    merged: dict[tuple[str, Any], Example] = {}
    for ex in old + new:
        key = ("track", ex.track_id) if ex.track_id is not None else ("file", ex.content_hash)
        merged.pop(key, None)
        merged[key] = ex
    return list(merged.values())


def catalogue_stats(store: Store, con: Any, catalogue: Catalogue | None = None) -> Any:
    """Per-dimension catalogue mean/std for standardising (from the index record when it has them)."""
    from tagstore import learn
    from tagstore.vectors import active_record, iter_embeddings

    record = active_record(con)
    if record is not None and record["stats_mean"] is not None and record["layout_digest"] == store.layout.digest:
        return learn.CatalogueStats(record["stats_mean"], record["stats_std"], int(record["stats_count"]))
    if catalogue is not None:
        return learn.CatalogueStats.from_embeddings(catalogue[1])
    return learn.CatalogueStats.from_chunks(raw for _, raw in iter_embeddings(con, store.layout.dim))


def _sample_unlabelled(
    con: Any, store: Store, exclude: set[int], seed: int, catalogue: Catalogue | None = None
) -> np.ndarray:
    """Vectors ``(m, dim)`` of up to UNLABELLED_SAMPLE catalogue tracks not in ``exclude`` (seeded, uniform)."""
    if catalogue is not None:
        ids = catalogue[0]
    else:
        ids = con.execute("SELECT track_id FROM embeddings").fetchnumpy()["track_id"].astype(np.int64)
    ids = np.setdiff1d(ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    if ids.size == 0:
        return np.zeros((0, store.layout.dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(ids, size=min(UNLABELLED_SAMPLE, ids.size), replace=False))
    if catalogue is not None:
        rows = np.searchsorted(catalogue[0], chosen, sorter=catalogue[2])
        return np.asarray(catalogue[1][catalogue[2][rows]], dtype=np.float32)
    return store.embeddings(chosen.tolist(), con)


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % (2**31)


def fit_examples(
    store: Store, con: Any, name: str, examples: list[Example], method: str, catalogue: Catalogue | None = None
) -> Any:
    """Fit a TagModel from resolved examples (reads vectors and a seeded unlabelled sample).

    ``catalogue`` (from :func:`load_catalogue`) serves the sample and the statistics from memory.
    """
    from tagstore import learn

    pos = [e for e in examples if e.label > 0]
    neg = [e for e in examples if e.label <= 0]
    if not pos:
        raise TagError(f"tag {name!r} has no positive examples; give at least one with --examples")

    def vectors(exs: list[Example]) -> np.ndarray:
        ids = [e.track_id for e in exs if e.track_id is not None]
        stored = store.embeddings(ids, con) if ids else np.zeros((0, store.layout.dim), np.float32)
        outside = [e.vector for e in exs if e.track_id is None]
        return np.concatenate([stored, np.stack(outside)]) if outside else stored

    labelled = {e.track_id for e in examples if e.track_id is not None}
    unlabelled = _sample_unlabelled(con, store, labelled, _seed(name), catalogue)
    if not neg and len(unlabelled) == 0:
        raise TagError(
            f"tag {name!r} has only positive examples and the catalogue has no other tracks to contrast them "
            "with; add tracks with `tagstore add` or give --negatives"
        )
    stats = catalogue_stats(store, con, catalogue)
    from threadpoolctl import threadpool_limits

    # The fit solves many tiny systems: BLAS threads only add contention there (5-10x slower on a busy machine).
    with threadpool_limits(1, user_api="blas"):
        return learn.fit_tag(vectors(pos), vectors(neg), unlabelled, stats, method=method, seed=_seed(name))


Catalogue = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Every stored embedding: ids ``(n,)`` int64, raw vectors ``(n, dim)`` float32, and ``argsort(ids)``."""


def load_catalogue(store: Store) -> Catalogue:
    """The whole catalogue's vectors from the memory-mapped copy (the caller holds the write lock)."""
    from tagstore import vcache

    ids, vectors = vcache.matrix(store)
    return ids, vectors, np.argsort(ids, kind="stable")


def score_catalogue(
    store: Store, con: Any, models: list[Any], only_missing_for: list[int] | None = None,
    catalogue: Catalogue | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scores of every stored track (or, with tag ids, tracks missing a score for any of them).

    Returns ids ``(n,)`` int64 and scores ``(n, len(models))`` float32.
    """
    from tagstore import learn
    from tagstore.vectors import iter_embeddings

    if catalogue is not None:
        ids, vectors = catalogue[0], catalogue[1]
        if only_missing_for is not None:
            keep = np.isin(ids, _missing(con, only_missing_for))
            ids, vectors = ids[keep], vectors[keep]
        chunks = iter([(ids, vectors)])
    elif only_missing_for is None:
        chunks = iter_embeddings(con, store.layout.dim, SCORE_CHUNK)
    else:
        missing = _missing(con, only_missing_for).tolist()
        chunks = iter([(np.asarray(missing, dtype=np.int64), store.embeddings(missing, con))])
    all_ids, all_scores = [], []
    for ids, raw in chunks:
        all_ids.append(ids)
        all_scores.append(learn.score_tags(models, raw).reshape(len(ids), len(models)))
    if not all_ids:
        return np.zeros(0, np.int64), np.zeros((0, len(models)), np.float32)
    return np.concatenate(all_ids), np.concatenate(all_scores).astype(np.float32)


def _missing(con: Any, tag_ids: list[int]) -> np.ndarray:
    """Ids of tracks lacking a score for at least one of ``tag_ids``."""
    rows = con.execute(
        """SELECT track_id FROM embeddings
           EXCEPT SELECT track_id FROM tag_scores WHERE tag_id IN (SELECT unnest(?::BIGINT[]))
                  GROUP BY track_id HAVING count(*) = ?""",
        [tag_ids, len(tag_ids)],
    ).fetchnumpy()["track_id"]
    return np.sort(np.asarray(rows, dtype=np.int64))


def _write_scores(con: Any, tag_ids: list[int], thresholds: list[float], ids: np.ndarray, scores: np.ndarray) -> None:
    """Replace the scores of ``ids`` for each tag (bulk, one statement per tag)."""
    for j, (tag_id, thr) in enumerate(zip(tag_ids, thresholds)):
        part = {"track_id": ids, "score": scores[:, j].astype(np.float32), "predicted": scores[:, j] >= thr}
        con.register("new_scores", part)
        con.execute(
            "DELETE FROM tag_scores WHERE tag_id = ? AND track_id IN (SELECT track_id FROM new_scores)", [tag_id]
        )
        con.execute("INSERT INTO tag_scores SELECT ?, track_id, score, predicted FROM new_scores", [tag_id])
        con.unregister("new_scores")


def add_tag(
    store: Store,
    name: str,
    examples: Sequence[str] = (),
    negatives: Sequence[str] = (),
    method: str | None = None,
    add_files: bool = False,
    progress: Progress | None = None,
) -> TagSummary:
    """Create or extend a learned tag, refit it and score every track; all or nothing."""
    from tagstore import learn

    t0 = time.perf_counter()
    name = check_tag_name(name)
    if method is not None and method not in (*learn.METHODS, "auto"):
        raise TagError(f"unknown method {method!r}; choose from auto, {', '.join(learn.METHODS)}")
    if not examples and not negatives:
        raise TagError(f"no examples given for tag {name!r}; pass --examples ID|PATH (and optionally --negatives)")
    if add_files:
        _ingest_outside(store, [*examples, *negatives])
    with store.write_lock():
        catalogue = load_catalogue(store)
        with cat.reading(store.path) as con:
            row = _tag_row(con, name)
            if row is not None and row[1] != "learned":
                raise TagError(f"{name!r} is a {row[1]} tag; choose another name for a learned tag")
            n_tracks = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            if n_tracks == 0 and row is None:
                raise TagError(f"the store {store.path} is empty; add tracks with `tagstore add` before learning tags")
            new = resolve_examples(store, examples, 1, con) + resolve_examples(store, negatives, 0, con)
            old = _stored_examples(con, store, row[0]) if row else []
            merged = _merge(old, new)
            choice = method or (row[2] if row and row[2] else DEFAULT_METHOD)
            model = fit_examples(store, con, name, merged, resolve_method(choice, merged), catalogue)
            ids, scores = score_catalogue(store, con, [model], catalogue=catalogue)
        with cat.transaction(store.path) as con:
            tag_id = _save_tag(con, name, model, merged, row[0] if row else None, choice)
            _write_scores(con, [tag_id], [model.threshold], ids, scores)
            (summary,) = list_tags(store, con, names=[name])
    summary.fit_s = time.perf_counter() - t0
    return summary


def _ingest_outside(store: Store, items: Sequence[str]) -> None:
    paths = []
    with store.reader() as con:
        for item in items:
            try:
                store.resolve(item, con)
            except TrackNotFoundError:
                paths.append(item)
    if paths:
        report = store.add(paths)
        if report.failed:
            first = report.failed[0]
            raise InputError(f"cannot add example {first['path']}: {first['reason']}")


def _save_tag(
    con: Any, name: str, model: Any, examples: list[Example], tag_id: int | None, choice: str | None = None
) -> int:
    n_pos = sum(1 for e in examples if e.label > 0)
    n_neg = len(examples) - n_pos
    values = [model.method, choice or model.method, float(model.threshold), _finite_or_none(model.cv_ap),
              model.to_bytes(), int(model.version), n_pos, n_neg]  # fmt: skip
    if tag_id is None:
        tag_id = con.execute(
            """INSERT INTO tags (name, kind, source, method, method_choice, threshold, cv_ap, model, model_version,
                   n_pos, n_neg, trained_at) VALUES (?, 'learned', 'user', ?, ?, ?, ?, ?, ?, ?, ?, now()) RETURNING id""",
            [name, *values],
        ).fetchone()[0]
    else:
        con.execute(
            """UPDATE tags SET method = ?, method_choice = ?, threshold = ?, cv_ap = ?, model = ?, model_version = ?,
                   n_pos = ?, n_neg = ?, trained_at = now() WHERE id = ?""",
            [*values, tag_id],
        )
        con.execute("DELETE FROM tag_examples WHERE tag_id = ?", [tag_id])
        con.execute("DELETE FROM tag_external_examples WHERE tag_id = ?", [tag_id])
    for ex in examples:
        if ex.track_id is not None:
            con.execute("INSERT INTO tag_examples (tag_id, track_id, label, source) VALUES (?, ?, ?, 'user')",
                        [tag_id, ex.track_id, ex.label])  # fmt: skip
        else:
            con.execute(
                "INSERT INTO tag_external_examples (tag_id, content_hash, label, path, vector) VALUES (?, ?, ?, ?, ?)",
                [tag_id, ex.content_hash, ex.label, ex.path, ex.vector.astype(np.float32).tobytes()],
            )
    return int(tag_id)


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def list_tags(store: Store, con: Any | None = None, names: Sequence[str] | None = None, kind: str | None = None) -> list[TagSummary]:
    """Every tag (or those named) with its examples, method, threshold, predicted count and CV AP."""
    if con is None:
        with store.reader() as c:
            return list_tags(store, c, names, kind)
    where, params = [], []
    if names is not None:
        where.append("t.name IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(names))
    if kind is not None:
        where.append("t.kind = ?")
        params.append(kind)
    rows = con.execute(
        f"""SELECT t.name, t.kind, t.method, t.n_pos, t.n_neg, t.threshold, t.cv_ap,
                   count(s.track_id) FILTER (WHERE s.predicted), count(s.track_id), t.trained_at
            FROM tags t LEFT JOIN tag_scores s ON s.tag_id = t.id
            {'WHERE ' + ' AND '.join(where) if where else ''}
            GROUP BY ALL ORDER BY t.kind DESC, t.name""",
        params,
    ).fetchall()
    return [TagSummary(*r[:9], trained_at=None if r[9] is None else str(r[9])) for r in rows]


def _load_models(con: Any, names: Sequence[str] | None = None) -> list[tuple[int, str, Any]]:
    from tagstore import learn

    rows = con.execute("SELECT id, name, model FROM tags WHERE kind = 'learned' AND model IS NOT NULL ORDER BY id").fetchall()
    if names is not None:
        wanted = set(names)
        rows = [r for r in rows if r[1] in wanted]
    return [(int(tid), name, learn.TagModel.from_bytes(blob)) for tid, name, blob in rows]


def rescore(store: Store, names: Sequence[str] | None = None, all_tracks: bool = False) -> dict[str, Any]:
    """Score tracks that lack a score for the learned tags (``all_tracks``: rescore every track)."""
    t0 = time.perf_counter()
    with store.write_lock():
        with cat.reading(store.path) as con:
            for name in names or ():
                _require_learned(con, name)
            models = _load_models(con, names)
            if not models:
                return {"tags": 0, "tracks": 0, "seconds": time.perf_counter() - t0}
            tag_ids = [m[0] for m in models]
            n_missing = len(_missing(con, tag_ids)) if not all_tracks else None
        # A few new tracks are read from DuckDB directly; a big rescore goes through the mapped copy.
        catalogue = load_catalogue(store) if all_tracks or n_missing > 5000 else None
        with cat.reading(store.path) as con:
            ids, scores = score_catalogue(
                store, con, [m[2] for m in models], None if all_tracks else tag_ids, catalogue
            )
        if len(ids):
            with cat.transaction(store.path) as con:
                _write_scores(con, tag_ids, [float(m[2].threshold) for m in models], ids, scores)
    return {"tags": len(models), "tracks": int(len(ids)), "seconds": time.perf_counter() - t0}


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


def scores(
    store: Store, name: str, top: int | None = 20, predicted_only: bool = False, exclude_examples: bool = False
) -> list[ScoredTrack]:
    """Tracks by descending score for a tag (learned or model); ``top=None`` lists all.

    ``exclude_examples`` leaves out the tag's own examples (to see what it found, not what it was shown).
    """
    with store.reader() as con:
        row = _tag_row(con, check_tag_name(name))
        if row is None:
            _require_learned(con, name)
        sql = """SELECT t.id, t.path, t.title, t.artist, t.duration_s, s.score, s.predicted
                 FROM tag_scores s JOIN tracks t ON t.id = s.track_id WHERE s.tag_id = ?"""
        if predicted_only:
            sql += " AND s.predicted"
        if exclude_examples:
            sql += " AND t.id NOT IN (SELECT track_id FROM tag_examples WHERE tag_id = s.tag_id)"
        sql += " ORDER BY s.score DESC, t.id"
        if top is not None:
            sql += f" LIMIT {int(top)}"
        rows = con.execute(sql, [row[0]]).fetchall()
    return [ScoredTrack(i, *r) for i, r in enumerate(rows, start=1)]


def tag_examples(store: Store, name: str) -> list[dict[str, Any]]:
    """A learned tag's examples: label (+1/0), stored track id or outside path."""
    with store.reader() as con:
        tag_id = _require_learned(con, check_tag_name(name))
        return [
            {"label": "positive" if e.label > 0 else "negative", "id": e.track_id, "path": e.path}
            for e in _stored_examples(con, store, tag_id)
        ]


def remove_tag(store: Store, name: str) -> None:
    """Delete a learned tag with its examples, scores and suggestions."""
    with store.write_lock():
        with cat.transaction(store.path) as con:
            tag_id = _require_learned(con, check_tag_name(name))
            for table in ("tag_examples", "tag_external_examples", "tag_scores", "tag_suggestions"):
                con.execute(f"DELETE FROM {table} WHERE tag_id = ?", [tag_id])
            con.execute("DELETE FROM tags WHERE id = ?", [tag_id])


def remove_examples(store: Store, name: str, items: Sequence[str]) -> TagSummary:
    """Drop examples (ids, stored paths or outside paths) from a tag and refit it."""
    name = check_tag_name(name)
    with store.write_lock():
        catalogue = load_catalogue(store)
        with cat.reading(store.path) as con:
            tag_id = _require_learned(con, name)
            current = _stored_examples(con, store, tag_id)
            keep = list(current)
            for item in items:
                before = len(keep)
                try:
                    tid = store.resolve(item, con).id
                    keep = [e for e in keep if e.track_id != tid]
                except TrackNotFoundError:
                    full = str(Path(item).expanduser().absolute())
                    keep = [e for e in keep if e.track_id is not None or e.path != full]
                if len(keep) == before:
                    raise TagError(f"{item!r} is not an example of {name!r}; see `tagstore tag-examples {name}`")
            choice = _tag_row(con, name)[2] or DEFAULT_METHOD
            model = fit_examples(store, con, name, keep, resolve_method(choice, keep), catalogue)
            ids, sc = score_catalogue(store, con, [model], catalogue=catalogue)
        with cat.transaction(store.path) as con:
            _save_tag(con, name, model, keep, tag_id, choice)
            _write_scores(con, [tag_id], [model.threshold], ids, sc)
            (summary,) = list_tags(store, con, names=[name])
    return summary


def _positives(con: Any, tag_id: int) -> list[int]:
    return [r[0] for r in con.execute(
        "SELECT track_id FROM tag_examples WHERE tag_id = ? AND label > 0 ORDER BY track_id", [tag_id]).fetchall()]  # fmt: skip


def propagate(store: Store, name: str, k: int = 10, limit: int | None = None) -> list[dict[str, Any]]:
    """Spread a tag to the nearest neighbours of its stored positive examples; stored as suggestions."""
    from tagstore import learn
    from tagstore.vectors import index_vectors, open_index

    name = check_tag_name(name)
    index, record = open_index(store)
    with store.reader() as con:
        tag_id = _require_learned(con, name)
        pos = _positives(con, tag_id)
        if not pos:
            raise TagError(f"tag {name!r} has no stored positive examples to propagate from")
        negs = [r[0] for r in con.execute("SELECT track_id FROM tag_examples WHERE tag_id = ? AND label <= 0", [tag_id]).fetchall()]
        q = index_vectors(store, store.embeddings(pos, con), record)
    sims, nbrs = index.search(q, k + len(pos))
    found = learn.propagate(np.asarray(pos), nbrs, sims, exclude=negs, limit=limit)
    with store.write_lock():
        with cat.transaction(store.path) as con:
            con.execute("DELETE FROM tag_suggestions WHERE tag_id = ?", [tag_id])
            for s in found:
                con.execute("INSERT INTO tag_suggestions (tag_id, track_id, score, sources) VALUES (?, ?, ?, ?)",
                            [tag_id, s.id, s.score, ",".join(map(str, s.sources))])  # fmt: skip
    return _with_paths(store, [{"id": s.id, "score": s.score, "sources": list(s.sources)} for s in found])


def _with_paths(store: Store, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not items:
        return items
    with store.reader() as con:
        rows = dict(con.execute("SELECT id, path FROM tracks WHERE id IN (SELECT unnest(?::BIGINT[]))",
                                [[i["id"] for i in items]]).fetchall())  # fmt: skip
    return [{**i, "path": rows.get(i["id"])} for i in items]


def suggest(store: Store, name: str, n: int = 10) -> list[dict[str, Any]]:
    """Tracks whose labels would most improve the tag: near its threshold, and unlike each other."""
    from tagstore import learn

    name = check_tag_name(name)
    with store.reader() as con:
        tag_id = _require_learned(con, name)
        (_, _, model), = _load_models(con, [name])
        rows = con.execute("SELECT track_id, score FROM tag_scores WHERE tag_id = ? ORDER BY track_id", [tag_id]).fetchall()
        labelled = [r[0] for r in con.execute("SELECT track_id FROM tag_examples WHERE tag_id = ?", [tag_id]).fetchall()]
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        sc = np.array([r[1] for r in rows], dtype=np.float64)
        picked = learn.suggest(model, ids, sc, lambda sub: store.embeddings(sub.tolist(), con), n, exclude=labelled)
    by_id = dict(zip(ids.tolist(), sc.tolist()))
    return _with_paths(store, [{"id": int(i), "score": by_id[int(i)], "threshold": model.threshold} for i in picked])


def explain(store: Store, track: str, name: str, k: int = 3) -> dict[str, Any]:
    """Why a track got its score for a tag: nearest examples and the parts of the score."""
    from tagstore import learn

    name = check_tag_name(name)
    with store.reader() as con:
        tag_id = _require_learned(con, name)
        (_, _, model), = _load_models(con, [name])
        t = store.resolve(track, con)
        x = store.embeddings([t.id], con)[0]
        exs = _stored_examples(con, store, tag_id)
        pos = [e for e in exs if e.label > 0 and e.track_id is not None]
        neg = [e for e in exs if e.label <= 0 and e.track_id is not None]
        pv = store.embeddings([e.track_id for e in pos], con) if pos else np.zeros((0, store.layout.dim), np.float32)
        nv = store.embeddings([e.track_id for e in neg], con) if neg else None
    exp = learn.explain(model, x, pv, nv, np.array([e.track_id for e in pos]),
                        np.array([e.track_id for e in neg]) if neg else None, k=k)  # fmt: skip
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


def predicted_ids(store: Store, name: str) -> np.ndarray:
    """Catalogue ids predicted to carry the tag (learned or model)."""
    with store.reader() as con:
        row = _tag_row(con, check_tag_name(name))
        if row is None:
            _require_learned(con, name)
        return np.array([r[0] for r in con.execute(
            "SELECT track_id FROM tag_scores WHERE tag_id = ? AND predicted", [row[0]]).fetchall()], dtype=np.int64)  # fmt: skip


def prototype_query(store: Store, name: str, record: dict[str, Any]) -> np.ndarray:
    """The tag's positive prototype in index space: the normalised mean of its positives' index vectors (1, dim)."""
    from tagstore.vectors import index_vectors

    with store.reader() as con:
        tag_id = _require_learned(con, check_tag_name(name))
        pos = _positives(con, tag_id)
        raw = [store.embeddings(pos, con)] if pos else []
        raw += [np.frombuffer(b, dtype=np.float32)[None, :] for (b,) in con.execute(
            "SELECT vector FROM tag_external_examples WHERE tag_id = ? AND label > 0", [tag_id]).fetchall()]  # fmt: skip
    if not raw:
        raise TagError(f"tag {name!r} has no positive examples")
    v = index_vectors(store, np.concatenate(raw), record).mean(axis=0, keepdims=True)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def refit_all(store: Store) -> list[str]:
    """Refit every learned tag from its examples (after re-embedding) and rescore the catalogue.

    Outside-file examples are re-embedded from their paths; those whose file is gone are dropped with
    a warning. Model tags of embedders no longer in the layout are removed. Returns the refitted names.
    The caller holds the write lock.
    """
    import logging

    from tagstore.embedding import TrackEmbedder
    from tagstore.errors import AudioError

    log = logging.getLogger("tagstore")
    names = [b.name for b in store.layout.blocks]
    with cat.transaction(store.path) as con:
        stale = [r[0] for r in con.execute(
            "SELECT id FROM tags WHERE kind = 'model' AND NOT list_contains(?::VARCHAR[], source)", [names]).fetchall()]  # fmt: skip
        for tag_id in stale:
            con.execute("DELETE FROM tag_scores WHERE tag_id = ?", [tag_id])
            con.execute("DELETE FROM tags WHERE id = ?", [tag_id])
        external = con.execute("SELECT tag_id, content_hash, path FROM tag_external_examples").fetchall()
        if external:
            embedder = TrackEmbedder.from_layout(store.layout)
            for tag_id, digest, path in external:
                try:
                    vec = embedder.embed_file(path).vector
                except (AudioError, OSError) as exc:
                    log.warning("dropping the outside example %s of tag %d: %s", path, tag_id, exc)
                    con.execute("DELETE FROM tag_external_examples WHERE tag_id = ? AND content_hash = ?", [tag_id, digest])
                    continue
                con.execute("UPDATE tag_external_examples SET vector = ? WHERE tag_id = ? AND content_hash = ?",
                            [vec.tobytes(), tag_id, digest])  # fmt: skip
        learned = con.execute(
            "SELECT id, name, coalesce(method_choice, method) FROM tags WHERE kind = 'learned' ORDER BY id"
        ).fetchall()
    catalogue = load_catalogue(store) if learned else None
    refitted = []
    for tag_id, name, method in learned:
        with cat.reading(store.path) as con:
            examples = _stored_examples(con, store, tag_id)
            if not any(e.label > 0 for e in examples):
                log.warning("tag %r has no positive examples left; it keeps no scores until you add some", name)
                model = None
            else:
                choice = method or DEFAULT_METHOD
                model = fit_examples(store, con, name, examples, resolve_method(choice, examples), catalogue)
                ids, sc = score_catalogue(store, con, [model], catalogue=catalogue)
        with cat.transaction(store.path) as con:
            con.execute("DELETE FROM tag_scores WHERE tag_id = ?", [tag_id])
            if model is not None:
                _save_tag(con, name, model, examples, tag_id, choice)
                _write_scores(con, [tag_id], [model.threshold], ids, sc)
                refitted.append(name)
    return refitted
