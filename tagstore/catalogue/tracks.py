"""Statements on tracks, their embeddings and the files that failed to ingest.

Embeddings are stored as raw float32 BLOBs of the store's layout dimension, one row per track.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tagstore.catalogue import Connection, bump_generation, pending, set_meta
from tagstore.errors import StoreDamagedError, TrackNotFoundError

TRACK_COLUMNS = (
    "id", "path", "content_hash", "size_bytes", "duration_s", "sample_rate", "channels",
    "format", "title", "artist", "album", "genre", "added_at",
)  # fmt: skip
CHUNK = 8192
"""Embedding rows fetched at a time by :func:`iter_embeddings`."""


@dataclass
class Track:
    """One catalogue row (duration in seconds, sample rate in Hz, size in bytes)."""

    id: int
    path: str
    content_hash: str
    size_bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    format: str | None
    title: str | None
    artist: str | None
    album: str | None
    genre: str | None
    added_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NewTrack:
    """What ingest commits for one file: its stat, content hash, probe, tags and raw vector ``(dim,)``."""

    path: str
    content_hash: str
    size_bytes: int
    mtime_ns: int
    duration_s: float
    sample_rate: int
    channels: int
    format: str | None
    title: str | None
    artist: str | None
    album: str | None
    genre: str | None
    vector: np.ndarray


def _track(row: Sequence[Any]) -> Track:
    values = dict(zip(TRACK_COLUMNS, row))
    values["added_at"] = str(values["added_at"])
    return Track(**values)


_SELECT = f"SELECT {', '.join(TRACK_COLUMNS)} FROM tracks"


def by_id(con: Connection, track_id: int) -> Track | None:
    row = con.execute(f"{_SELECT} WHERE id = ?", [int(track_id)]).fetchone()
    return _track(row) if row else None


def by_path(con: Connection, path: str) -> Track | None:
    row = con.execute(f"{_SELECT} WHERE path = ?", [path]).fetchone()
    return _track(row) if row else None


def list_tracks(
    con: Connection,
    match: str | None = None,
    artist: str | None = None,
    album: str | None = None,
    genre: str | None = None,
    ids: Sequence[int] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Track]:
    """Tracks ordered by id. ``match`` is a case-insensitive substring of path, title or artist."""
    where, params = [], []
    if match:
        where.append("(path ILIKE ? OR title ILIKE ? OR artist ILIKE ?)")
        params += [f"%{match}%"] * 3
    for col, value in (("artist", artist), ("album", album), ("genre", genre)):
        if value:
            where.append(f"{col} ILIKE ?")
            params.append(f"%{value}%")
    if ids is not None:
        where.append("id IN (SELECT unnest(?::BIGINT[]))")
        params.append([int(i) for i in ids])
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return [_track(r) for r in con.execute(sql, params).fetchall()]


def summary_rows(con: Connection, ids: Sequence[int]) -> dict[int, tuple[str, str | None, str | None, str | None, float]]:
    """id → (path, title, artist, album, duration_s) for the given ids that exist."""
    rows = con.execute(
        "SELECT id, path, title, artist, album, duration_s FROM tracks WHERE id IN (SELECT unnest(?::BIGINT[]))",
        [[int(i) for i in ids]],
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}  # type: ignore[misc]


SearchRow = tuple[int, str, str | None, str | None, str | None, float]
"""``(id, path, title, artist, album, duration_s)``."""


def tag_filter_sql(with_tag_ids: Sequence[int], without_tag_ids: Sequence[int], column: str = "t.id") -> tuple[str, list[Any]]:
    """A WHERE fragment (``TRUE`` when empty) keeping tracks predicted to carry every ``with`` tag and none of
    the ``without`` tags, and its parameters."""
    parts, params = [], []
    for tag_id in with_tag_ids:
        parts.append(f"{column} IN (SELECT track_id FROM tag_scores WHERE tag_id = ? AND predicted)")
        params.append(int(tag_id))
    if without_tag_ids:
        parts.append(
            f"{column} NOT IN (SELECT track_id FROM tag_scores WHERE predicted AND tag_id IN (SELECT unnest(?::BIGINT[])))"
        )
        params.append([int(i) for i in without_tag_ids])
    return (" AND ".join(parts) or "TRUE"), params


def text_search(
    con: Connection, words: Sequence[str], limit: int, offset: int = 0,
    with_tag_ids: Sequence[int] = (), without_tag_ids: Sequence[int] = (),
) -> list[SearchRow]:  # fmt: skip
    """Tracks whose title, artist, album or path contains every word (case-insensitive), with tag filters.

    Ordered by artist, album, title (else path) and id; ``words`` empty lists every track.
    """
    where, params = [], []
    for word in words:
        where.append("(" + " OR ".join(f"t.{c} ILIKE ? ESCAPE '\\'" for c in ("title", "artist", "album", "path")) + ")")
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params += [f"%{escaped}%"] * 4
    fragment, fparams = tag_filter_sql(with_tag_ids, without_tag_ids)
    where.append(fragment)
    params += fparams
    sql = f"""SELECT t.id, t.path, t.title, t.artist, t.album, t.duration_s FROM tracks t WHERE {' AND '.join(where)}
              ORDER BY coalesce(t.artist, ''), coalesce(t.album, ''), coalesce(t.title, t.path), t.id
              LIMIT {int(limit)} OFFSET {int(offset)}"""
    return con.execute(sql, params).fetchall()


def iter_summaries(con: Connection, chunk: int = 65536) -> Iterator[list[tuple[Any, ...]]]:
    """``(id, path, title, artist, album, duration_s)`` of every track with an embedding, by id, ``chunk`` rows at a time."""
    cur = con.execute(
        "SELECT t.id, t.path, t.title, t.artist, t.album, t.duration_s FROM tracks t "
        "JOIN embeddings e ON e.track_id = t.id ORDER BY t.id"
    )
    while rows := cur.fetchmany(chunk):
        yield rows


def paths(con: Connection, ids: Sequence[int]) -> dict[int, str]:
    """id → path for the given ids that exist."""
    return {i: row[0] for i, row in summary_rows(con, ids).items()}


def fingerprints(con: Connection) -> list[tuple[int, str, str, int, int]]:
    """Every track's ``(id, path, content hash, size in bytes, mtime in ns)``: what ingest skips by."""
    return con.execute("SELECT id, path, content_hash, size_bytes, mtime_ns FROM tracks").fetchall()


def embedded_tracks(con: Connection) -> list[tuple[int, str, str]]:
    """``(id, path, content hash)`` of every track that has an embedding."""
    return con.execute("SELECT t.id, t.path, t.content_hash FROM tracks t JOIN embeddings e ON e.track_id = t.id").fetchall()


def total_duration(con: Connection) -> float:
    """Seconds of audio in the catalogue."""
    return float(con.execute("SELECT coalesce(sum(duration_s), 0) FROM tracks").fetchone()[0])


def failures(con: Connection) -> list[dict[str, str]]:
    """Files that failed to ingest, with their error class and reason."""
    rows = con.execute("SELECT path, error, reason, failed_at FROM ingest_failures ORDER BY path").fetchall()
    return [{"path": p, "error": e, "reason": r, "failed_at": str(t)} for p, e, r, t in rows]


# --- embeddings ---------------------------------------------------------------------------------


def embedding_count(con: Connection) -> int:
    return int(con.execute("SELECT count(*) FROM embeddings").fetchone()[0])


def embedding_ids(con: Connection) -> np.ndarray:
    """Ids of every track with an embedding ``(n,)`` int64, ascending."""
    ids = con.execute("SELECT track_id FROM embeddings ORDER BY track_id").fetchnumpy()["track_id"]
    return np.asarray(ids, dtype=np.int64)


def embeddings(con: Connection, ids: Sequence[int], dim: int) -> np.ndarray:
    """Raw stored vectors ``(len(ids), dim)`` float32, in the order of ``ids``."""
    ids = [int(i) for i in ids]
    rows = con.execute(
        "SELECT track_id, vector FROM embeddings WHERE track_id IN (SELECT unnest(?::BIGINT[]))", [ids]
    ).fetchall()
    found = {tid: blob for tid, blob in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise TrackNotFoundError(f"no embedding for track id(s) {missing[:5]}; run `tagstore rebuild --re-embed`")
    return decode_vectors(ids, [found[i] for i in ids], dim).copy()


def decode_vectors(ids: Sequence[int], blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored BLOBs as ``(len(ids), dim)`` float32; StoreDamagedError naming a track whose vector has the
    wrong size or is not finite (edited by hand, or damaged)."""
    joined = b"".join(blobs)
    if len(joined) == len(ids) * dim * 4:
        out = np.frombuffer(joined, dtype=np.float32).reshape(len(ids), dim)
        if np.isfinite(out).all():
            return out
        bad = int(np.asarray(ids)[~np.isfinite(out).all(axis=1)][0])
        what = "holds NaN or infinite values"
    else:
        bad = next(int(i) for i, b in zip(ids, blobs) if len(b) != dim * 4)
        size = len(next(b for i, b in zip(ids, blobs) if int(i) == bad))
        what = f"is {size} bytes, not {dim * 4}"
    raise StoreDamagedError(
        f"the stored embedding of track {bad} {what}; run `tagstore check --repair` to re-embed it from its file "
        f"(or `tagstore remove {bad}`)"
    )


def iter_embeddings(con: Connection, dim: int, chunk: int = CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stored embeddings, ``chunk`` at a time: ``(ids (m,) int64, raw (m, dim) float32)``.

    In storage order (no ORDER BY: sorting 2 KB rows costs more than the rest of the read).
    """
    cur = con.execute("SELECT track_id, vector FROM embeddings")
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, decode_vectors(ids, [r[1] for r in rows], dim)


# --- ingest -------------------------------------------------------------------------------------


def insert_track(con: Connection, t: NewTrack, layout_digest: str) -> int:
    """Add a track with its embedding; returns its new id."""
    tid = con.execute(
        """INSERT INTO tracks (path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate,
               channels, format, title, artist, album, genre)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        [t.path, t.content_hash, t.size_bytes, t.mtime_ns, t.duration_s, t.sample_rate, t.channels,
         t.format, t.title, t.artist, t.album, t.genre],
    ).fetchone()[0]  # fmt: skip
    con.execute("INSERT INTO embeddings VALUES (?, ?, ?)", [tid, layout_digest, t.vector.tobytes()])
    con.execute("DELETE FROM ingest_failures WHERE path = ?", [t.path])
    return int(tid)


def replace_track(con: Connection, track_id: int, t: NewTrack, layout_digest: str) -> None:
    """A stored file whose content changed: new facts and embedding, its scores dropped, the index marked stale."""
    con.execute(
        """UPDATE tracks SET content_hash = ?, size_bytes = ?, mtime_ns = ?, duration_s = ?,
               sample_rate = ?, channels = ?, format = ?, title = ?, artist = ?, album = ?, genre = ?
           WHERE id = ?""",
        [t.content_hash, t.size_bytes, t.mtime_ns, t.duration_s, t.sample_rate, t.channels, t.format,
         t.title, t.artist, t.album, t.genre, track_id],
    )  # fmt: skip
    con.execute(
        "UPDATE embeddings SET vector = ?, layout_digest = ? WHERE track_id = ?",
        [t.vector.tobytes(), layout_digest, track_id],
    )
    con.execute("DELETE FROM tag_scores WHERE track_id = ?", [track_id])
    set_meta(con, "index_needs_rebuild", "1")
    con.execute("DELETE FROM ingest_failures WHERE path = ?", [t.path])


def set_vector(con: Connection, track_id: int, layout_digest: str, vector: np.ndarray) -> None:
    """Replace a track's stored embedding (a repair re-embedding its file); counts as a change."""
    con.execute("UPDATE embeddings SET vector = ?, layout_digest = ? WHERE track_id = ?",
                [np.asarray(vector, np.float32).tobytes(), layout_digest, int(track_id)])  # fmt: skip
    set_meta(con, "index_needs_rebuild", "1")
    bump_generation(con)


def record_failure(con: Connection, path: str, error: str, reason: str) -> None:
    """Remember a file that could not be ingested (the latest reason wins)."""
    con.execute(
        """INSERT INTO ingest_failures (path, error, reason) VALUES (?, ?, ?)
           ON CONFLICT (path) DO UPDATE SET error = excluded.error, reason = excluded.reason, failed_at = now()""",
        [path, error, reason],
    )


def delete_tracks(con: Connection, ids: Sequence[int]) -> None:
    """Remove tracks with their embeddings, examples, scores and suggestions; counts as a change."""
    ids = [int(i) for i in ids]
    for table, col in (
        ("tag_examples", "track_id"),
        ("tag_scores", "track_id"),
        ("tag_suggestions", "track_id"),
        ("tag_answers", "track_id"),
        ("embeddings", "track_id"),
        ("tracks", "id"),
    ):
        con.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT unnest(?::BIGINT[]))", [ids])
    bump_generation(con)


# --- re-embedding: new vectors staged beside the live ones -------------------------------------


def start_staging(con: Connection, layout_digest: str) -> tuple[list[tuple[int, str]], int]:
    """Prepare the staging table for ``layout_digest``; returns the ``(id, path)`` still to embed, and the total."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS embeddings_staging "
        "(track_id BIGINT PRIMARY KEY, layout_digest VARCHAR NOT NULL, vector BLOB NOT NULL)"
    )
    con.execute("DELETE FROM embeddings_staging WHERE layout_digest <> ?", [layout_digest])
    todo = con.execute(
        "SELECT id, path FROM tracks WHERE id NOT IN (SELECT track_id FROM embeddings_staging) ORDER BY id"
    ).fetchall()
    total = int(con.execute("SELECT count(*) FROM tracks").fetchone()[0])
    return todo, total


def stage_embedding(con: Connection, track_id: int, layout_digest: str, vector: np.ndarray) -> None:
    con.execute("INSERT INTO embeddings_staging VALUES (?, ?, ?)", [track_id, layout_digest, vector.tobytes()])


def switch_to_staged(con: Connection, layout_json: str) -> None:
    """Replace every embedding by its staged one and record the new layout; counts as a change."""
    con.execute("DELETE FROM embeddings")
    con.execute("INSERT INTO embeddings SELECT track_id, layout_digest, vector FROM embeddings_staging")
    con.execute("DROP TABLE embeddings_staging")
    set_meta(con, "layout", layout_json)
    set_meta(con, "index_needs_rebuild", "1")
    bump_generation(con)
    pending.add(con, pending.REFIT)  # the learned tags live in the old space until refitted



# --- files that changed on disk without changing their audio ---------------------------------------


def set_fingerprint(con: Connection, track_id: int, content_hash: str, size_bytes: int, mtime_ns: int) -> None:
    """A track's file after tagstore rewrote its tags: new hash, size and mtime, the same audio and embedding."""
    con.execute(
        "UPDATE tracks SET content_hash = ?, size_bytes = ?, mtime_ns = ? WHERE id = ?",
        [content_hash, int(size_bytes), int(mtime_ns), int(track_id)],
    )


def move_track(con: Connection, track_id: int, path: str, size_bytes: int, mtime_ns: int) -> None:
    """A track whose file moved (same content at ``path``): it keeps its id, embedding, examples and scores."""
    con.execute(
        "UPDATE tracks SET path = ?, size_bytes = ?, mtime_ns = ? WHERE id = ?",
        [path, int(size_bytes), int(mtime_ns), int(track_id)],
    )
    con.execute("DELETE FROM ingest_failures WHERE path = ?", [path])


# --- checks (tagstore check) --------------------------------------------------------------------


def bad_embeddings(con: Connection, dim: int, chunk: int = CHUNK) -> list[tuple[int, str]]:
    """``(track id, what is wrong)`` for stored vectors of the wrong size or with NaN / infinite values."""
    bad = [(int(i), f"{n} bytes, not {dim * 4}") for i, n in con.execute(
        "SELECT track_id, octet_length(vector) FROM embeddings WHERE octet_length(vector) <> ? ORDER BY track_id",
        [dim * 4]).fetchall()]  # fmt: skip
    cur = con.execute("SELECT track_id, vector FROM embeddings WHERE octet_length(vector) = ?", [dim * 4])
    while rows := cur.fetchmany(chunk):
        raw = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        for k in np.flatnonzero(~np.isfinite(raw).all(axis=1)):
            bad.append((int(rows[k][0]), "NaN or infinite values"))
    return bad


ORPHANS = {
    "embeddings without a track": "DELETE FROM embeddings WHERE track_id NOT IN (SELECT id FROM tracks)",
    "tracks without an embedding": None,
    "examples of a missing track or tag": "DELETE FROM tag_examples WHERE track_id NOT IN (SELECT id FROM tracks) "
    "OR tag_id NOT IN (SELECT id FROM tags)",
    "outside examples of a missing tag": "DELETE FROM tag_external_examples WHERE tag_id NOT IN (SELECT id FROM tags)",
    "scores of a missing track or tag": "DELETE FROM tag_scores WHERE track_id NOT IN (SELECT id FROM tracks) "
    "OR tag_id NOT IN (SELECT id FROM tags)",
    "suggestions of a missing track or tag": "DELETE FROM tag_suggestions WHERE track_id NOT IN (SELECT id FROM tracks) "
    "OR tag_id NOT IN (SELECT id FROM tags)",
}
"""Rows that point at nothing, and the statement that deletes them (None: not deletable from the catalogue)."""


def orphans(con: Connection) -> dict[str, int]:
    """How many rows of each kind in :data:`ORPHANS` point at nothing (kinds with none left out)."""
    found = {}
    for what, delete in ORPHANS.items():
        if delete is None:
            sql = "SELECT count(*) FROM tracks WHERE id NOT IN (SELECT track_id FROM embeddings)"
        else:
            sql = delete.replace("DELETE FROM", "SELECT count(*) FROM", 1)
        n = int(con.execute(sql).fetchone()[0])
        if n:
            found[what] = n
    return found


def delete_orphans(con: Connection) -> dict[str, int]:
    """Delete the deletable rows of :data:`ORPHANS`; returns how many of each kind."""
    found = orphans(con)
    for what in found:
        delete = ORPHANS[what]
        if delete is not None:
            con.execute(delete)
    if "embeddings without a track" in found:
        bump_generation(con)
    return {k: v for k, v in found.items() if ORPHANS[k] is not None}
