"""Statements on tags: learned and model tags, their examples, scores and suggestions.

A learned tag's model is stored as bytes (``TagModel.to_bytes``); this module never decodes it.
Scores are written in bulk (one statement per tag, from registered numpy columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue.tracks import tag_filter_sql


@dataclass(frozen=True)
class TagRow:
    """A tag's identity: id, kind ('learned' or 'model'), its pinned method choice, its model bytes, and
    the threshold rule it keeps (``rule`` None: the default)."""

    id: int
    kind: str
    method_choice: str | None
    model: bytes | None
    rule: str | None = None
    rule_value: float | None = None


@dataclass(frozen=True)
class StoredExample:
    """An example as stored: a catalogue track (``track_id``) or an outside file (``vector`` bytes)."""

    label: int
    track_id: int | None
    path: str
    content_hash: str | None = None
    vector: bytes | None = None


@dataclass(frozen=True)
class FittedTag:
    """What a fit gives the catalogue to keep for a learned tag."""

    method: str
    method_choice: str
    threshold: float
    cv_ap: float | None
    model: bytes
    model_version: int
    decision: Decision | None = None


@dataclass(frozen=True)
class Decision:
    """A tag's threshold rule and what it promises: rule ('f1', 'precision', 'probability'; for model tags
    'top' or 'fixed'), its value, the threshold as a probability, expected precision / recall, the CV
    AP's spread and the estimated base rate (None where unknown)."""

    rule: str | None
    rule_value: float | None = None
    threshold_p: float | None = None
    expected_precision: float | None = None
    expected_recall: float | None = None
    cv_ap_std: float | None = None
    base_rate: float | None = None

    def values(self) -> list[object]:
        return [self.rule, self.rule_value, self.threshold_p, self.expected_precision, self.expected_recall,
                self.cv_ap_std, self.base_rate]  # fmt: skip


DECISION_COLUMNS = "rule, rule_value, threshold_p, expected_precision, expected_recall, cv_ap_std, base_rate"
_SET_DECISION = ", ".join(f"{c} = ?" for c in DECISION_COLUMNS.split(", "))


def tag_row(con: Connection, name: str) -> TagRow | None:
    row = con.execute(
        "SELECT id, kind, coalesce(method_choice, method), model, rule, rule_value FROM tags WHERE name = ?", [name]
    ).fetchone()
    return TagRow(int(row[0]), row[1], row[2], row[3], row[4], row[5]) if row else None


def set_decision(con: Connection, tag_id: int, threshold: float, decision: Decision, model: bytes | None = None) -> None:
    """A tag's new threshold and decision (and model bytes, for a learned tag), then its predictions."""
    con.execute(
        f"UPDATE tags SET threshold = ?, {_SET_DECISION}, model = coalesce(?, model) WHERE id = ?",
        [float(threshold), *decision.values(), model, tag_id],
    )
    repredict(con, tag_id)


def repredict(con: Connection, tag_id: int) -> None:
    """Recompute a tag's ``predicted`` column from its threshold: examples are always predicted as labelled."""
    con.execute(
        """UPDATE tag_scores s SET predicted = coalesce(
               (SELECT e.label > 0 FROM tag_examples e WHERE e.tag_id = s.tag_id AND e.track_id = s.track_id),
               s.score >= (SELECT threshold FROM tags WHERE id = s.tag_id))
           WHERE s.tag_id = ?""",
        [tag_id],
    )


def learned_names(con: Connection, limit: int = 5) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT name FROM tags WHERE kind = 'learned' ORDER BY name LIMIT ?", [limit]).fetchall()]  # fmt: skip


def learned_tags(con: Connection) -> list[tuple[int, str, str | None]]:
    """``(id, name, method choice)`` of every learned tag, by id."""
    return con.execute(
        "SELECT id, name, coalesce(method_choice, method) FROM tags WHERE kind = 'learned' ORDER BY id"
    ).fetchall()


def learned_models(con: Connection, names: Sequence[str] | None = None) -> list[tuple[int, str, bytes]]:
    """``(id, name, model bytes)`` of the learned tags that have a model (those named, or all), by id."""
    rows = con.execute(
        "SELECT id, name, model FROM tags WHERE kind = 'learned' AND model IS NOT NULL ORDER BY id"
    ).fetchall()
    if names is not None:
        wanted = set(names)
        rows = [r for r in rows if r[1] in wanted]
    return [(int(tid), name, bytes(blob)) for tid, name, blob in rows]


# --- model tags (a backend's own output classes) -----------------------------------------------


def store_model_scores(
    con: Connection, track_id: int, source: str, names: Sequence[str], probs: np.ndarray, threshold: float
) -> None:
    """A track's scores for a model's own tags (created as kind 'model' on first sight)."""
    con.execute(
        """INSERT INTO tags (name, kind, source, method, threshold)
           SELECT unnest(?::VARCHAR[]), 'model', ?, 'model', ? ON CONFLICT (name) DO NOTHING""",
        [list(names), source, threshold],
    )
    con.execute(
        """INSERT OR REPLACE INTO tag_scores
           SELECT t.id, ?, p.score, p.score >= t.threshold FROM tags t
           JOIN (SELECT unnest(?::VARCHAR[]) AS name, unnest(?::REAL[]) AS score) p ON p.name = t.name""",
        [track_id, list(names), [float(x) for x in probs]],
    )


def model_score_matrix(con: Connection, source: str) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """A model's tag scores on every track: tag ids (T,) int64, each tag's rule, and scores (n, T)
    float32 (rows: tracks scored for every tag, in track id order)."""
    tags = con.execute("SELECT id, rule FROM tags WHERE kind = 'model' AND source = ? ORDER BY id", [source]).fetchall()
    tag_ids = np.array([t[0] for t in tags], dtype=np.int64)
    if not tags:
        return tag_ids, [], np.zeros((0, 0), np.float32)
    cols = con.execute(
        """SELECT track_id, list(score ORDER BY tag_id) AS s FROM tag_scores
           WHERE tag_id IN (SELECT unnest(?::BIGINT[])) GROUP BY track_id HAVING count(*) = ? ORDER BY track_id""",
        [tag_ids.tolist(), len(tags)],
    ).fetchall()
    S = np.array([c[1] for c in cols], dtype=np.float32).reshape(len(cols), len(tags))
    return tag_ids, [t[1] for t in tags], S


def model_sources(con: Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT source FROM tags WHERE kind = 'model' ORDER BY 1").fetchall()]


def drop_model_tags_except(con: Connection, sources: Sequence[str]) -> int:
    """Remove model tags (and their scores) of backends not in ``sources``; returns how many."""
    stale = [r[0] for r in con.execute(
        "SELECT id FROM tags WHERE kind = 'model' AND NOT list_contains(?::VARCHAR[], source)", [list(sources)]).fetchall()]  # fmt: skip
    for tag_id in stale:
        con.execute("DELETE FROM tag_scores WHERE tag_id = ?", [tag_id])
        con.execute("DELETE FROM tags WHERE id = ?", [tag_id])
    return len(stale)


# --- learned tags: examples and models ----------------------------------------------------------


def stored_examples(con: Connection, tag_id: int) -> list[StoredExample]:
    """A tag's examples: catalogue tracks first, then outside files (with their vectors)."""
    rows = con.execute(
        "SELECT e.track_id, e.label, t.path FROM tag_examples e JOIN tracks t ON t.id = e.track_id WHERE e.tag_id = ?",
        [tag_id],
    ).fetchall()
    out = [StoredExample(int(label), int(tid), path) for tid, label, path in rows]
    for label, path, digest, blob in con.execute(
        "SELECT label, path, content_hash, vector FROM tag_external_examples WHERE tag_id = ?", [tag_id]
    ).fetchall():
        out.append(StoredExample(int(label), None, path, digest, bytes(blob)))
    return out


def save_learned(
    con: Connection, name: str, fitted: FittedTag, examples: Sequence[StoredExample], tag_id: int | None
) -> int:
    """Create or update a learned tag with its model and replace its examples; returns its id."""
    n_pos = sum(1 for e in examples if e.label > 0)
    values = [fitted.method, fitted.method_choice, float(fitted.threshold), fitted.cv_ap, fitted.model,
              int(fitted.model_version), n_pos, len(examples) - n_pos,
              *(fitted.decision or Decision(None)).values()]  # fmt: skip
    if tag_id is None:
        tag_id = con.execute(
            f"""INSERT INTO tags (name, kind, source, method, method_choice, threshold, cv_ap, model, model_version,
                   n_pos, n_neg, {DECISION_COLUMNS}, trained_at)
                VALUES (?, 'learned', 'user', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()) RETURNING id""",
            [name, *values],
        ).fetchone()[0]
    else:
        con.execute(
            f"""UPDATE tags SET method = ?, method_choice = ?, threshold = ?, cv_ap = ?, model = ?, model_version = ?,
                   n_pos = ?, n_neg = ?, {_SET_DECISION}, trained_at = now() WHERE id = ?""",
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
                [tag_id, ex.content_hash, ex.label, ex.path, ex.vector],
            )
    return int(tag_id)


def delete_tag(con: Connection, tag_id: int) -> None:
    """A tag with its examples, scores and suggestions."""
    for table in ("tag_examples", "tag_external_examples", "tag_scores", "tag_suggestions", "tag_answers"):
        con.execute(f"DELETE FROM {table} WHERE tag_id = ?", [tag_id])
    con.execute("DELETE FROM tags WHERE id = ?", [tag_id])


def example_ids(con: Connection, tag_id: int, label: int | None = None) -> list[int]:
    """Catalogue ids of a tag's examples: all, positives (``label=1``) or negatives (``label=0``), ascending."""
    sql = "SELECT track_id FROM tag_examples WHERE tag_id = ?"
    if label is not None:
        sql += " AND label > 0" if label > 0 else " AND label <= 0"
    return [int(r[0]) for r in con.execute(sql + " ORDER BY track_id", [tag_id]).fetchall()]


def external_positive_vectors(con: Connection, tag_id: int) -> list[bytes]:
    return [bytes(b) for (b,) in con.execute(
        "SELECT vector FROM tag_external_examples WHERE tag_id = ? AND label > 0", [tag_id]).fetchall()]  # fmt: skip


def all_external_examples(con: Connection) -> list[tuple[int, str, str]]:
    """``(tag id, content hash, path)`` of every outside-file example."""
    return con.execute("SELECT tag_id, content_hash, path FROM tag_external_examples").fetchall()


def set_external_vector(con: Connection, tag_id: int, content_hash: str, vector: np.ndarray) -> None:
    con.execute("UPDATE tag_external_examples SET vector = ? WHERE tag_id = ? AND content_hash = ?",
                [np.asarray(vector, np.float32).tobytes(), tag_id, content_hash])  # fmt: skip


def delete_external_example(con: Connection, tag_id: int, content_hash: str) -> None:
    con.execute("DELETE FROM tag_external_examples WHERE tag_id = ? AND content_hash = ?", [tag_id, content_hash])


# --- scores -------------------------------------------------------------------------------------


WRITE_ROWS = 2_000_000
"""Score rows written per statement by :func:`write_scores` (its frame: ~21 bytes a row)."""


def write_scores(
    con: Connection, tag_ids: Sequence[int], thresholds: Sequence[float], ids: np.ndarray, scores: np.ndarray
) -> None:
    """Replace the scores ``(n, len(tag_ids))`` of tracks ``ids`` (n,) for each tag. ``predicted`` is score >=
    threshold, except for the tag's examples: predicted as labelled.

    One upsert (``INSERT ... ON CONFLICT DO UPDATE`` on the primary key) per batch of tags of up to
    :data:`WRITE_ROWS` rows: the key's index finds the rows, so the cost follows the rows written, not the
    size of the score table (10k new tracks x 50 tags used to cost three statements per tag, each a scan
    of the whole table).
    """
    n = len(ids)
    if n == 0 or not len(tag_ids):
        return
    per = max(1, WRITE_ROWS // n)
    keys = np.asarray(tag_ids, dtype=np.int64)
    cuts = np.asarray(thresholds, dtype=np.float64)
    for lo in range(0, len(keys), per):
        block = scores[:, lo : lo + per].T  # (tags, n)
        part = {
            "tag_id": np.repeat(keys[lo : lo + per], n), "track_id": np.tile(np.asarray(ids, np.int64), len(block)),
            "score": block.astype(np.float32).ravel(), "predicted": (block >= cuts[lo : lo + per, None]).ravel(),
        }  # fmt: skip
        con.register("new_scores", part)
        try:
            con.execute(
                """INSERT INTO tag_scores
                   SELECT n.tag_id, n.track_id, n.score, coalesce(e.label > 0, n.predicted) FROM new_scores n
                   LEFT JOIN tag_examples e ON e.tag_id = n.tag_id AND e.track_id = n.track_id
                   ON CONFLICT (tag_id, track_id) DO UPDATE SET score = excluded.score, predicted = excluded.predicted"""
            )
        finally:
            con.unregister("new_scores")


def clear_scores(con: Connection, tag_id: int) -> None:
    con.execute("DELETE FROM tag_scores WHERE tag_id = ?", [tag_id])


def missing_scores(con: Connection, tag_ids: Sequence[int]) -> np.ndarray:
    """Ids ``(m,)`` int64 (ascending) of tracks lacking a score for at least one of ``tag_ids``."""
    rows = con.execute(
        """SELECT track_id FROM embeddings
           EXCEPT SELECT track_id FROM tag_scores WHERE tag_id IN (SELECT unnest(?::BIGINT[]))
                  GROUP BY track_id HAVING count(*) = ?""",
        [list(tag_ids), len(tag_ids)],
    ).fetchnumpy()["track_id"]
    return np.sort(np.asarray(rows, dtype=np.int64))


def score_table(con: Connection, tag_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stored score of a tag: ids ``(n,)`` int64 ascending and scores ``(n,)`` float64."""
    cols = con.execute("SELECT track_id, score FROM tag_scores WHERE tag_id = ? ORDER BY track_id", [tag_id]).fetchnumpy()
    return np.asarray(cols["track_id"], dtype=np.int64), np.asarray(cols["score"], dtype=np.float64)


def predicted_ids(con: Connection, tag_id: int) -> np.ndarray:
    """Ids ``(m,)`` int64 of the tracks predicted to carry the tag."""
    rows = con.execute("SELECT track_id FROM tag_scores WHERE tag_id = ? AND predicted", [tag_id]).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def top_scores(
    con: Connection, tag_id: int, top: int | None, predicted_only: bool, exclude_examples: bool
) -> list[tuple[int, str, str | None, str | None, float, float, bool]]:
    """``(id, path, title, artist, duration_s, score, predicted)`` by descending score (ties by id)."""
    sql = """SELECT t.id, t.path, t.title, t.artist, t.duration_s, s.score, s.predicted
             FROM tag_scores s JOIN tracks t ON t.id = s.track_id WHERE s.tag_id = ?"""
    if predicted_only:
        sql += " AND s.predicted"
    if exclude_examples:
        sql += " AND t.id NOT IN (SELECT track_id FROM tag_examples WHERE tag_id = s.tag_id)"
    sql += " ORDER BY s.score DESC, t.id"
    if top is not None:
        sql += f" LIMIT {int(top)}"
    return con.execute(sql, [tag_id]).fetchall()


def ranked(
    con: Connection, tag_id: int, limit: int, with_tag_ids: Sequence[int] = (), without_tag_ids: Sequence[int] = ()
) -> list[tuple[int, str, str | None, str | None, str | None, float, float, bool]]:
    """``(id, path, title, artist, album, duration_s, score, predicted)`` by descending score (ties by id),
    keeping tracks that pass the tag filters (:func:`tagstore.catalogue.tracks.tag_filter_sql`)."""
    fragment, params = tag_filter_sql(with_tag_ids, without_tag_ids)
    return con.execute(
        f"""SELECT t.id, t.path, t.title, t.artist, t.album, t.duration_s, s.score, s.predicted
            FROM tag_scores s JOIN tracks t ON t.id = s.track_id WHERE s.tag_id = ? AND {fragment}
            ORDER BY s.score DESC, t.id LIMIT {int(limit)}""",
        [tag_id, *params],
    ).fetchall()


def count_at_least(con: Connection, tag_id: int, threshold: float) -> int:
    """How many of a tag's scored tracks score ``>= threshold``."""
    return int(con.execute("SELECT count(*) FROM tag_scores WHERE tag_id = ? AND score >= ?",
                           [tag_id, float(threshold)]).fetchone()[0])  # fmt: skip


def summaries(
    con: Connection, names: Sequence[str] | None = None, kind: str | None = None
) -> list[tuple]:
    """Per tag: name, kind, method, n_pos, n_neg, threshold, cv_ap, predicted, scored, trained_at, then the
    :class:`Decision` columns (rule ... base_rate)."""
    where, params = [], []
    if names is not None:
        where.append("t.name IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(names))
    if kind is not None:
        where.append("t.kind = ?")
        params.append(kind)
    rows = con.execute(
        f"""SELECT t.name, t.kind, t.method, t.n_pos, t.n_neg, t.threshold, t.cv_ap,
                   count(s.track_id) FILTER (WHERE s.predicted), count(s.track_id), t.trained_at,
                   t.rule, t.rule_value, t.threshold_p, t.expected_precision, t.expected_recall, t.cv_ap_std,
                   t.base_rate
            FROM tags t LEFT JOIN tag_scores s ON s.tag_id = t.id
            {'WHERE ' + ' AND '.join(where) if where else ''}
            GROUP BY ALL ORDER BY t.kind DESC, t.name""",
        params,
    ).fetchall()
    return [(*r[:9], None if r[9] is None else str(r[9]), *r[10:]) for r in rows]


def replace_suggestions(con: Connection, tag_id: int, found: Sequence[tuple[int, float, Sequence[int]]]) -> None:
    """A tag's suggestions ``(track id, score, source example ids)``, replacing the old ones."""
    con.execute("DELETE FROM tag_suggestions WHERE tag_id = ?", [tag_id])
    for track_id, score, sources in found:
        con.execute("INSERT INTO tag_suggestions (tag_id, track_id, score, sources) VALUES (?, ?, ?, ?)",
                    [tag_id, int(track_id), float(score), ",".join(map(str, sources))])  # fmt: skip


# --- answers given while teaching a tag (the web page's labelling loop) --------------------------


@dataclass(frozen=True)
class Answer:
    """One answer: ``answer`` is 'yes', 'no' or 'skip'; ``previous`` the track's label before it (None: no
    example); ``created``: it created the tag; the counts and CV AP are the tag's after the refit."""

    seq: int
    track_id: int
    answer: str
    previous: int | None
    created: bool
    n_pos: int
    n_neg: int
    cv_ap: float | None


def example_label(con: Connection, tag_id: int, track_id: int) -> int | None:
    """A stored track's label for a tag (1 or 0), or None when it is not an example."""
    row = con.execute("SELECT label FROM tag_examples WHERE tag_id = ? AND track_id = ?", [tag_id, int(track_id)]).fetchone()
    return None if row is None else (1 if row[0] > 0 else 0)


def record_answer(con: Connection, tag_id: int, a: Answer) -> None:
    con.execute(
        """INSERT INTO tag_answers (tag_id, seq, track_id, answer, previous, created, n_pos, n_neg, cv_ap)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [tag_id, a.seq, a.track_id, a.answer, a.previous, a.created, a.n_pos, a.n_neg, a.cv_ap],
    )


def next_answer_seq(con: Connection, tag_id: int) -> int:
    return int(con.execute("SELECT coalesce(max(seq), 0) + 1 FROM tag_answers WHERE tag_id = ?", [tag_id]).fetchone()[0])


def answers(con: Connection, tag_id: int) -> list[Answer]:
    """A tag's answers, oldest first."""
    rows = con.execute(
        """SELECT seq, track_id, answer, previous, created, n_pos, n_neg, cv_ap FROM tag_answers
           WHERE tag_id = ? ORDER BY seq""",
        [tag_id],
    ).fetchall()
    return [Answer(int(r[0]), int(r[1]), r[2], None if r[3] is None else int(r[3]), bool(r[4]), *r[5:]) for r in rows]


def last_answer(con: Connection, tag_id: int) -> Answer | None:
    done = answers(con, tag_id)
    return done[-1] if done else None


def delete_answer(con: Connection, tag_id: int, seq: int) -> None:
    con.execute("DELETE FROM tag_answers WHERE tag_id = ? AND seq = ?", [tag_id, seq])


def skipped_ids(con: Connection, tag_id: int) -> list[int]:
    """Tracks answered 'skip' for a tag (not proposed again)."""
    return [int(r[0]) for r in con.execute(
        "SELECT DISTINCT track_id FROM tag_answers WHERE tag_id = ? AND answer = 'skip' ORDER BY 1", [tag_id]).fetchall()]  # fmt: skip


def tags_with_examples(con: Connection, track_ids: Sequence[int]) -> list[int]:
    """Ids of the learned tags that have any of ``track_ids`` as an example, ascending."""
    rows = con.execute(
        "SELECT DISTINCT tag_id FROM tag_examples WHERE track_id IN (SELECT unnest(?::BIGINT[])) ORDER BY tag_id",
        [[int(i) for i in track_ids]],
    ).fetchall()
    return [int(r[0]) for r in rows]


def track_tags(con: Connection, track_id: int) -> list[dict[str, object]]:
    """Every tag a track has a score for: name, kind, score, threshold, predicted, and whether it is one of
    the tag's examples (``positive``/``negative``/None); learned tags first, best score first."""
    rows = con.execute(
        """SELECT g.name, g.kind, s.score, g.threshold, s.predicted, e.label
           FROM tag_scores s JOIN tags g ON g.id = s.tag_id
           LEFT JOIN tag_examples e ON e.tag_id = s.tag_id AND e.track_id = s.track_id
           WHERE s.track_id = ? ORDER BY g.kind DESC, s.score DESC, g.name""",
        [int(track_id)],
    ).fetchall()
    return [
        {"name": n, "kind": k, "score": float(s), "threshold": None if t is None else float(t), "predicted": bool(p),
         "example": None if lab is None else ("positive" if lab > 0 else "negative")}
        for n, k, s, t, p, lab in rows
    ]  # fmt: skip
