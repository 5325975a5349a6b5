"""Teaching a tag by ear: one answer at a time (yes / no / skip), a refit after each, undo, the learning curve.

This is the labelling loop of the web page as library calls. Each answer is logged in the catalogue
(``tag_answers``) in the same transaction as the refit it causes, so undo knows what to put back (the
track's label before the answer) and the learning curve is the logged cross-validated AP against the
number of labels. A "yes" on a tag that does not exist yet creates it from that one example. Proposals
are :func:`tagstore.learning.suggest`'s picks (near the threshold, unlike each other), leaving out the
tag's examples and the tracks skipped for it. Every writing function expects the caller to hold the
write lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagstore import learning
from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.tags import Answer
from tagstore.derived.matrix import current as current_matrix
from tagstore.derived.matrix import matrix
from tagstore.errors import InputError, TagError, UnknownTagError
from tagstore.learning import TagModel
from tagstore.store import Store
from tagstore.tags import fitting
from tagstore.tags.examples import Example, check_tag_name, merge, require_learned, stored_examples
from tagstore.tags.views import TagSummary, list_tags

ANSWERS = ("yes", "no", "skip")
LABELS = {"yes": 1, "no": 0}


@dataclass
class Taught:
    """The tag after an answer or an undo (``summary`` None: the undo removed the tag it had created).

    ``proposals``: the tracks to label next; ``curve``: points of the learning curve; ``refit_s``: seconds
    spent fitting, scoring and saving (0 when nothing was refitted).
    """

    summary: TagSummary | None
    proposals: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    answer: Answer | None = None
    refit_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": None if self.summary is None else self.summary.to_dict(),
            "proposals": self.proposals, "curve": self.curve, "refit_s": self.refit_s,
            "answer": None if self.answer is None else {
                "seq": self.answer.seq, "track": self.answer.track_id, "answer": self.answer.answer},
        }  # fmt: skip


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def curve(con: Connection, tag_id: int) -> list[dict[str, Any]]:
    """The learning curve: after each yes/no answer, the labels so far and the cross-validated AP (None
    while there are too few examples to cross-validate)."""
    return [
        {"labels": a.n_pos + a.n_neg, "n_pos": a.n_pos, "n_neg": a.n_neg, "cv_ap": a.cv_ap}
        for a in tag_sql.answers(con, tag_id) if a.answer != "skip"
    ]  # fmt: skip


def _pick(
    con: Connection, tag_id: int, model: TagModel, ids: np.ndarray, scores: np.ndarray, rows: Any, n: int
) -> list[dict[str, Any]]:
    """Proposals from scores ``(m,)`` of tracks ``ids`` (m,): suggest's picks with their catalogue rows."""
    exclude = set(tag_sql.example_ids(con, tag_id)) | set(tag_sql.skipped_ids(con, tag_id))
    picked = learning.suggest(model, ids, scores, rows, n, exclude=exclude)
    if not len(picked):
        return []
    order = np.argsort(ids, kind="stable")
    at = order[np.searchsorted(ids, picked, sorter=order)]
    meta = track_sql.summary_rows(con, picked.tolist())
    return [
        {"id": int(i), "path": meta[int(i)][0], "title": meta[int(i)][1], "artist": meta[int(i)][2],
         "album": meta[int(i)][3], "duration_s": meta[int(i)][4], "score": float(scores[j]),
         "threshold": float(model.threshold)}
        for i, j in zip(picked.tolist(), at.tolist()) if int(i) in meta
    ]  # fmt: skip


def proposals(store: Store, name: str, n: int = 10, con: Connection | None = None) -> list[dict[str, Any]]:
    """Tracks to label next for a learned tag, from its stored scores (examples and skipped tracks left out)."""
    if con is None:
        with store.reader() as c:
            return proposals(store, name, n, c)
    row = tag_sql.tag_row(con, check_tag_name(name))
    tag_id = require_learned(con, check_tag_name(name))
    assert row is not None
    if row.model is None:
        return []
    ids, scores = tag_sql.score_table(con, tag_id)
    mat = current_matrix(store, con)
    rows = mat.rows if mat is not None else (lambda sub: store.embeddings(sub.tolist(), con))
    return _pick(con, tag_id, TagModel.from_bytes(bytes(row.model)), ids, scores, rows, n)


def _state(
    store: Store, con: Connection, name: str, tag_id: int, n: int, summary: TagSummary | None = None
) -> tuple[TagSummary, list[dict[str, Any]], list[dict[str, Any]]]:
    if summary is None:
        (summary,) = list_tags(store, con, names=[name])
    return summary, proposals(store, name, n, con), curve(con, tag_id)


def learning_curve(store: Store, name: str) -> list[dict[str, Any]]:
    """A learned tag's learning curve (see :func:`curve`)."""
    name = check_tag_name(name)
    with store.reader() as con:
        return curve(con, require_learned(con, name))


def state(store: Store, name: str, n: int = 10) -> Taught:
    """A learned tag as the teaching view shows it: summary, proposals and learning curve."""
    name = check_tag_name(name)
    with store.reader() as con:
        return Taught(*_state(store, con, name, require_learned(con, name), n))


def answer(store: Store, name: str, track_id: int, reply: str, n: int = 10) -> Taught:
    """Record ``reply`` ('yes', 'no' or 'skip') for a stored track and refit the tag (not for 'skip').

    'yes' on a tag that does not exist creates it with this one example. Returns the tag with new proposals.
    One read-write transaction does it all (opening connections is the loop's largest fixed cost).
    """
    name = check_tag_name(name)
    if reply not in ANSWERS:
        raise InputError(f"answer {reply!r} is not one of {', '.join(ANSWERS)}")
    if reply == "skip":
        return _skip(store, name, track_id, n)
    t0 = time.perf_counter()
    with store.transaction() as con:
        track = store.track(int(track_id), con)
        row = tag_sql.tag_row(con, name)
        if row is None and reply != "yes":
            raise UnknownTagError(f"no tag {name!r} yet; answer yes to one track to start it")
        if row is not None and row.kind != "learned":
            raise TagError(f"{name!r} is a {row.kind} tag (scored by its model); it cannot be taught")
        previous = tag_sql.example_label(con, row.id, track.id) if row else None
        seq = tag_sql.next_answer_seq(con, row.id) if row else 1
        examples = merge(stored_examples(con, row.id) if row else [], [Example(LABELS[reply], track.id, track.path)])
        choice = (row.method_choice if row else None) or fitting.DEFAULT_METHOD
        mat = matrix(store, con)
        done = fitting.refit(store, con, name, examples, choice, mat, fitting.stored_rule(row))
        n_pos = sum(1 for e in examples if e.label > 0)
        record = Answer(seq, track.id, reply, previous, row is None, n_pos, len(examples) - n_pos, _finite(done.model.cv_ap))
        tag_id = fitting.save(con, name, done, examples, row.id if row else None, choice)
        tag_sql.record_answer(con, tag_id, record)
        (summary,) = list_tags(store, con, names=[name])
        picks = _pick(con, tag_id, done.model, done.ids, done.scores[:, 0], mat.rows, n)
        points = curve(con, tag_id)
    return Taught(summary, picks, points, record, time.perf_counter() - t0)


def _skip(store: Store, name: str, track_id: int, n: int) -> Taught:
    with store.transaction() as con:
        track = store.track(int(track_id), con)
        tag_id = require_learned(con, name)
        examples = stored_examples(con, tag_id)
        n_pos = sum(1 for e in examples if e.label > 0)
        (summary,) = list_tags(store, con, names=[name])
        record = Answer(tag_sql.next_answer_seq(con, tag_id), track.id, "skip", tag_sql.example_label(con, tag_id, track.id),
                        False, n_pos, len(examples) - n_pos, summary.cv_ap)  # fmt: skip
        tag_sql.record_answer(con, tag_id, record)
        return Taught(*_state(store, con, name, tag_id, n, summary), answer=record)


def undo(store: Store, name: str, n: int = 10) -> Taught:
    """Take back the tag's last answer: the track's label goes back to what it was, and the tag refits.

    Undoing the "yes" that created the tag removes the tag. TagError when there is nothing to undo.
    """
    name = check_tag_name(name)
    t0 = time.perf_counter()
    with store.transaction() as con:
        tag_id = require_learned(con, name)
        last = tag_sql.last_answer(con, tag_id)
        if last is None:
            raise TagError(f"tag {name!r} has no answer to undo")
        tag_sql.delete_answer(con, tag_id, last.seq)
        if last.answer == "skip":
            return Taught(*_state(store, con, name, tag_id, n), answer=last)
        examples = [e for e in stored_examples(con, tag_id) if e.track_id != last.track_id]
        if last.previous is not None:
            path = track_sql.paths(con, [last.track_id]).get(last.track_id, "")
            examples.append(Example(last.previous, last.track_id, path))
        if not any(e.label > 0 for e in examples):
            if not last.created:
                raise TagError(f"undoing answer {last.seq} would leave tag {name!r} without a positive example")
            tag_sql.delete_tag(con, tag_id)
            return Taught(None, [], [], last, time.perf_counter() - t0)
        row = tag_sql.tag_row(con, name)
        choice = (row.method_choice if row else None) or fitting.DEFAULT_METHOD
        mat = matrix(store, con)
        done = fitting.refit(store, con, name, examples, choice, mat, fitting.stored_rule(row))
        fitting.save(con, name, done, examples, tag_id, choice)
        (summary,) = list_tags(store, con, names=[name])
        picks = _pick(con, tag_id, done.model, done.ids, done.scores[:, 0], mat.rows, n)
        points = curve(con, tag_id)
    return Taught(summary, picks, points, last, time.perf_counter() - t0)
