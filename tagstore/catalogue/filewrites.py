"""Statements on the write log (``file_writes``): what ``tagstore write`` changed in each file, for ``--undo``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from tagstore.catalogue import Connection


@dataclass(frozen=True)
class WriteCandidate:
    """A track and one tag it would get written: the tag's name, kind and the track's score for it."""

    track_id: int
    path: str
    content_hash: str
    size_bytes: int
    mtime_ns: int
    tag: str
    kind: str
    score: float


@dataclass(frozen=True)
class LoggedWrite:
    """One file changed by a write run: the field's values before and after (None: the field was absent)."""

    run: int
    track_id: int
    path: str
    field: str
    old_values: list[str] | None
    new_values: list[str] | None
    old_hash: str
    new_hash: str


def _dump(values: Sequence[str] | None) -> str | None:
    return None if values is None else json.dumps(list(values), ensure_ascii=False)


def _load(text: str | None) -> list[str] | None:
    return None if text is None else list(json.loads(text))


def candidates(
    con: Connection, kinds: Sequence[str], names: Sequence[str] | None, min_score: float | None,
    track_ids: Sequence[int] | None,
) -> list[WriteCandidate]:  # fmt: skip
    """Predicted tags of the given kinds (those named, or all) per track, best score first, by track id."""
    sql = """SELECT t.id, t.path, t.content_hash, t.size_bytes, t.mtime_ns, g.name, g.kind, s.score
             FROM tag_scores s JOIN tags g ON g.id = s.tag_id JOIN tracks t ON t.id = s.track_id
             WHERE s.predicted AND g.kind IN (SELECT unnest(?::VARCHAR[]))"""
    params: list[object] = [list(kinds)]
    if names is not None:
        sql += " AND g.name IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(names))
    if min_score is not None:
        sql += " AND s.score >= ?"
        params.append(float(min_score))
    if track_ids is not None:
        sql += " AND t.id IN (SELECT unnest(?::BIGINT[]))"
        params.append([int(i) for i in track_ids])
    rows = con.execute(sql + " ORDER BY t.id, s.score DESC, g.name", params).fetchall()
    return [WriteCandidate(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], r[6], float(r[7])) for r in rows]


def next_run(con: Connection) -> int:
    """The number of a new write run."""
    return int(con.execute("SELECT coalesce(max(run), 0) + 1 FROM file_writes").fetchone()[0])


def log_write(con: Connection, w: LoggedWrite) -> None:
    con.execute(
        """INSERT INTO file_writes (run, track_id, path, field, old_values, new_values, old_hash, new_hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        [w.run, w.track_id, w.path, w.field, _dump(w.old_values), _dump(w.new_values), w.old_hash, w.new_hash],
    )


def last_run(con: Connection) -> int | None:
    """The latest run with writes not yet undone, or None."""
    row = con.execute("SELECT max(run) FROM file_writes WHERE NOT undone").fetchone()
    return None if row[0] is None else int(row[0])


def run_writes(con: Connection, run: int) -> list[LoggedWrite]:
    """The writes of a run not yet undone, by track id."""
    rows = con.execute(
        """SELECT run, track_id, path, field, old_values, new_values, old_hash, new_hash FROM file_writes
           WHERE run = ? AND NOT undone ORDER BY track_id""",
        [run],
    ).fetchall()
    return [LoggedWrite(int(r[0]), int(r[1]), r[2], r[3], _load(r[4]), _load(r[5]), r[6], r[7]) for r in rows]


def mark_undone(con: Connection, run: int, track_id: int) -> None:
    con.execute("UPDATE file_writes SET undone = true WHERE run = ? AND track_id = ?", [run, track_id])
