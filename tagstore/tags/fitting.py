"""Fitting learned tags: examples in, a fitted model and a score for every track out.

One path does it all (:func:`refit`): fit the tag's examples against a fixed-order unlabelled sample of the
catalogue, score every track, and save the model, the examples and the scores in one transaction, so a
failure anywhere leaves the tag exactly as it was. ``add-tag``, ``remove-examples`` and the refits after
a re-embed all go through it. Every function here expects the caller to hold the write lock, except
:func:`score_catalogue`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.catalogue import Connection
from tagstore.catalogue import records
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.tags import Decision, FittedTag
from tagstore.derived.index import catalogue_stats
from tagstore.derived.matrix import Matrix, matrix
from tagstore.derived.matrix import is_current as matrix_is_current
from tagstore.errors import AudioError, TagError
from tagstore.learning import METHODS, CatalogueStats, Rule, TagModel, score_tags
from tagstore.learning.fit import fit_examples
from tagstore.store import Store
from tagstore.tags.examples import (
    Example,
    check_tag_name,
    merge,
    require_learned,
    resolve_examples,
    stored_examples,
)
from tagstore.tags.views import TagSummary, list_tags

log = logging.getLogger("tagstore")

DEFAULT_METHOD = "auto"
AUTO_PROBE_FROM = 5
"""``auto`` fits the ensemble below this many positives and the probe from it on. On real music
(benchmarks/realset.py: 638 clips, 47 tags) the ensemble wins at K = 1 and 2 on every layout and the probe
from K = 5 on the default layout dsp,musicnn (macro AP 0.603 vs 0.594 at K=5, 0.661 vs 0.641 at K=10); the
demo corpus agrees (benchmarks/README.md)."""
SCORE_CHUNK = 16384
RESCORE_FROM_MATRIX = 50_000
"""Rescoring more tracks than this (or any number, while the mapped copy is current) reads the
memory-mapped matrix; fewer are read from DuckDB by id (10k x 1408-d: ~0.2 s), which spares a big
catalogue a refresh of the whole copy for a few new tracks."""


def resolve_method(choice: str, examples: Sequence[Example]) -> str:
    """The method to fit: ``choice`` itself, or for ``auto`` the evaluation's winner at this many positives."""
    if choice != "auto":
        return choice
    return "ensemble" if sum(1 for e in examples if e.label > 0) < AUTO_PROBE_FROM else "probe"


def check_method(method: str | None) -> None:
    if method is not None and method not in (*METHODS, "auto"):
        raise TagError(f"unknown method {method!r}; choose from auto, {', '.join(METHODS)}")


def fit_stats(store: Store, con: Connection, mat: Matrix | None = None) -> CatalogueStats:
    """The catalogue statistics a fit standardises with: the index's when it has them, else computed."""
    record = records.active_index(con)
    if record is not None and record.stats_mean is not None and record.layout_digest == store.layout.digest:
        assert record.stats_std is not None
        return CatalogueStats(record.stats_mean, record.stats_std, int(record.stats_count))
    if mat is not None:
        return CatalogueStats.from_chunks(vectors for _, vectors in mat.chunks())
    stats = catalogue_stats(con, store.layout.dim, min_tracks=1)
    if stats is None:
        raise TagError(f"the store {store.path} is empty; add tracks with `tagstore add` before learning tags")
    return stats


def groups(con: Connection, pos: list[Example], neg: list[Example]) -> list[Any]:
    """Cross-validation groups of examples (positives, then negatives): a stored track's album (artist +
    album) where known and the positives span at least two albums, else the track itself; an outside
    file its content."""
    ids = [e.track_id for e in pos + neg if e.track_id is not None]
    rows = track_sql.summary_rows(con, ids) if ids else {}

    def album(e: Example) -> Any:
        row = rows.get(e.track_id) if e.track_id is not None else None
        return ("album", row[2] or "", row[3]) if row and row[3] else None

    def own(e: Example) -> Any:
        return ("track", e.track_id) if e.track_id is not None else ("file", e.content_hash)

    albums = {album(e) or own(e) for e in pos}
    by_album = len(albums) >= 2
    return [(album(e) or own(e)) if by_album else own(e) for e in pos + neg]


def fit(store: Store, con: Connection, name: str, examples: list[Example], method: str, mat: Matrix | None = None,
        rule: Rule | None = None) -> TagModel:  # fmt: skip
    """Fit a TagModel from resolved examples against the catalogue (``mat`` serves the sample from memory)."""
    pos = [e for e in examples if e.label > 0]
    neg = [e for e in examples if e.label <= 0]
    if not pos:
        raise TagError(f"tag {name!r} has no positive examples; give at least one with --examples")

    def vectors(exs: list[Example]) -> np.ndarray:
        ids = [e.track_id for e in exs if e.track_id is not None]
        if not ids:
            stored = np.zeros((0, store.layout.dim), np.float32)
        else:  # the mapped copy holds the same vectors as DuckDB, without a scan of the BLOBs
            stored = mat.rows(np.asarray(ids, dtype=np.int64)) if mat is not None else store.embeddings(ids, con)
        outside = [e.vector for e in exs if e.track_id is None]
        return np.concatenate([stored, np.stack(outside)]) if outside else stored

    labelled = {e.track_id for e in examples if e.track_id is not None}
    pool = mat.ids if mat is not None else track_sql.embedding_ids(con)
    if not neg and len(np.setdiff1d(pool, np.fromiter(labelled, np.int64, len(labelled)))) == 0:
        raise TagError(
            f"tag {name!r} has only positive examples and the catalogue has no other tracks to contrast them "
            "with; add tracks with `tagstore add` or give --negatives"
        )
    rows = mat.rows if mat is not None else (lambda ids: store.embeddings(ids.tolist(), con))
    stats = fit_stats(store, con, mat)
    model, _ = fit_examples(name, vectors(pos), vectors(neg), pool, rows, labelled, stats, method,
                            groups=groups(con, pos, neg), rule=rule)  # fmt: skip
    return model


def score_catalogue(
    store: Store, con: Connection, models: list[TagModel], only: np.ndarray | None = None,
    mat: Matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scores of every stored track, or of the tracks ``only`` (m,) int64 (ascending).

    Returns ids ``(n,)`` int64 and scores ``(n, len(models))`` float32.
    """
    if mat is not None:
        chunks = mat.chunks(None if only is None else np.isin(mat.ids, only), SCORE_CHUNK)
    elif only is None:
        chunks = track_sql.iter_embeddings(con, store.layout.dim, SCORE_CHUNK)
    else:
        missing = np.asarray(only, dtype=np.int64)
        chunks = iter([(missing, store.embeddings(missing.tolist(), con))])
    all_ids, all_scores = [], []
    for ids, raw in chunks:
        all_ids.append(ids)
        all_scores.append(score_tags(models, raw).reshape(len(ids), len(models)))
    if not all_ids:
        return np.zeros(0, np.int64), np.zeros((0, len(models)), np.float32)
    return np.concatenate(all_ids), np.concatenate(all_scores).astype(np.float32)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass
class Refit:
    """A fitted tag not yet saved: its model and the scores ``(n,)`` of tracks ``ids`` (n,)."""

    model: TagModel
    ids: np.ndarray
    scores: np.ndarray


def stored_rule(row: tag_sql.TagRow | None) -> Rule:
    """The threshold rule a learned tag keeps (the default when none was set)."""
    return Rule(row.rule, row.rule_value) if row is not None and row.rule else Rule()


def decision(m: TagModel) -> Decision:
    """What the catalogue keeps of a learned tag's decision."""
    precision, recall = m.expected
    return Decision(m.rule.kind, m.rule.value, *(_finite_or_none(v) for v in (
        m.threshold_probability, precision, recall, m.cv_ap_std, m.base_rate)))  # fmt: skip


def refit(store: Store, con: Connection, name: str, examples: list[Example], choice: str, mat: Matrix,
          rule: Rule | None = None) -> Refit:  # fmt: skip
    """Fit a tag from its examples and score every track (nothing is written: see :func:`save`)."""
    model = fit(store, con, name, examples, resolve_method(choice, examples), mat, rule)
    ids, scores = score_catalogue(store, con, [model], mat=mat)
    return Refit(model, ids, scores)


def save(con: Connection, name: str, done: Refit, examples: list[Example], tag_id: int | None, choice: str) -> int:
    """Persist a refit: the model, its examples and its scores (in the caller's transaction)."""
    m = done.model
    fitted = FittedTag(m.method, choice or m.method, float(m.threshold), _finite_or_none(m.cv_ap), m.to_bytes(),
                       int(m.version), decision(m))  # fmt: skip
    tag_id = tag_sql.save_learned(con, name, fitted, [e.stored() for e in examples], tag_id)
    tag_sql.write_scores(con, [tag_id], [m.threshold], done.ids, done.scores)
    return tag_id


def add_tag(
    store: Store,
    name: str,
    examples: Sequence[str] = (),
    negatives: Sequence[str] = (),
    method: str | None = None,
    rule: Rule | None = None,
) -> TagSummary:
    """Create or extend a learned tag, refit it and score every track; all or nothing. ``rule``: a new
    threshold rule, kept by later refits (None: the tag's own, else the default)."""
    t0 = time.perf_counter()
    name = check_tag_name(name)
    check_method(method)
    if not examples and not negatives:
        raise TagError(f"no examples given for tag {name!r}; pass --examples ID|PATH (and optionally --negatives)")
    mat = matrix(store)
    with store.reader() as con:
        row = tag_sql.tag_row(con, name)
        if row is not None and row.kind != "learned":
            raise TagError(f"{name!r} is a {row.kind} tag; choose another name for a learned tag")
        if track_sql.embedding_count(con) == 0 and row is None:
            raise TagError(f"the store {store.path} is empty; add tracks with `tagstore add` before learning tags")
        new = resolve_examples(store, examples, 1, con) + resolve_examples(store, negatives, 0, con)
        _refuse_both_labels(new)
        merged = merge(stored_examples(con, row.id) if row else [], new)
        choice = method or (row.method_choice if row and row.method_choice else DEFAULT_METHOD)
        done = refit(store, con, name, merged, choice, mat, rule or stored_rule(row))
    with store.transaction() as con:
        save(con, name, done, merged, row.id if row else None, choice)
        (summary,) = list_tags(store, con, names=[name])
    summary.fit_s = time.perf_counter() - t0
    return summary


def _refuse_both_labels(examples: list[Example]) -> None:
    labels: dict[Any, tuple[int, str]] = {}
    for ex in examples:
        key = ex.track_id if ex.track_id is not None else ex.content_hash
        if key in labels and labels[key][0] != ex.label:
            what = f"track {ex.track_id}" if ex.track_id is not None else ex.path
            raise TagError(f"{what} is given both as a positive (--examples) and a negative (--negatives) example; "
                           "give it once, with the label you mean")  # fmt: skip
        labels[key] = (ex.label, ex.path)


def remove_examples(store: Store, name: str, items: Sequence[str]) -> TagSummary:
    """Drop examples (ids, stored paths or outside paths) from a tag and refit it."""
    name = check_tag_name(name)
    mat = matrix(store)
    with store.reader() as con:
        tag_id = require_learned(con, name)
        keep = stored_examples(con, tag_id)
        for item in items:
            before = len(keep)
            found = store.find(item, con)
            if found is not None:
                keep = [e for e in keep if e.track_id != found.id]
            else:
                full = str(Path(item).expanduser().absolute())
                keep = [e for e in keep if e.track_id is not None or e.path != full]
            if len(keep) == before:
                raise TagError(f"{item!r} is not an example of {name!r}; see `tagstore tag-examples {name}`")
        row = tag_sql.tag_row(con, name)
        choice = (row.method_choice if row else None) or DEFAULT_METHOD
        done = refit(store, con, name, keep, choice, mat, stored_rule(row))
    with store.transaction() as con:
        save(con, name, done, keep, tag_id, choice)
        (summary,) = list_tags(store, con, names=[name])
    return summary


def remove_tag(store: Store, name: str) -> None:
    """Delete a learned tag with its examples, scores and suggestions."""
    with store.transaction() as con:
        tag_sql.delete_tag(con, require_learned(con, check_tag_name(name)))


def _load_models(con: Connection, names: Sequence[str] | None = None) -> list[tuple[int, str, TagModel]]:
    return [(tid, name, TagModel.from_bytes(blob)) for tid, name, blob in tag_sql.learned_models(con, names)]


def rescore(store: Store, names: Sequence[str] | None = None, all_tracks: bool = False) -> dict[str, Any]:
    """Score tracks that lack a score for the learned tags (``all_tracks``: rescore every track)."""
    t0 = time.perf_counter()
    with store.reader() as con:
        for name in names or ():
            require_learned(con, name)
        models = _load_models(con, names)
        if not models:
            return {"tags": 0, "tracks": 0, "seconds": time.perf_counter() - t0}
        tag_ids = [m[0] for m in models]
        missing = None if all_tracks else tag_sql.missing_scores(con, tag_ids)
    if missing is not None and not len(missing):
        return {"tags": len(models), "tracks": 0, "seconds": time.perf_counter() - t0}
    # A few new tracks are read from DuckDB directly; a big rescore goes through the mapped copy.
    big = all_tracks or len(missing) > RESCORE_FROM_MATRIX
    mat = matrix(store) if big or matrix_is_current(store) else None
    with store.reader() as con:
        ids, scores = score_catalogue(store, con, [m[2] for m in models], missing, mat)
    if len(ids):
        with store.transaction() as con:
            tag_sql.write_scores(con, tag_ids, [float(m[2].threshold) for m in models], ids, scores)
    return {"tags": len(models), "tracks": int(len(ids)), "seconds": time.perf_counter() - t0}


def refit_all(store: Store) -> list[str]:
    """Refit every learned tag from its examples (after re-embedding) and rescore the catalogue.

    Outside-file examples are re-embedded from their paths; those whose file is gone are dropped with
    a warning. Model tags of embedders no longer in the layout are removed. Returns the refitted names.
    """
    with store.transaction() as con:
        tag_sql.drop_model_tags_except(con, [b.name for b in store.layout.blocks])
        external = tag_sql.all_external_examples(con)
        for tag_id, digest, path in external:
            try:
                vec = store.embedder().embed_file(path).vector
            except (AudioError, OSError) as exc:
                log.warning("dropping the outside example %s of tag %d: %s", path, tag_id, exc)
                tag_sql.delete_external_example(con, tag_id, digest)
                continue
            tag_sql.set_external_vector(con, tag_id, digest, vec)
        learned = tag_sql.learned_tags(con)
    mat = matrix(store) if learned else None
    refitted = []
    for tag_id, name, method in learned:
        done = None
        with store.reader() as con:
            examples = stored_examples(con, tag_id)
            choice = method or DEFAULT_METHOD
            if not any(e.label > 0 for e in examples):
                log.warning("tag %r has no positive examples left; it keeps no scores until you add some", name)
            else:
                assert mat is not None
                done = refit(store, con, name, examples, choice, mat, stored_rule(tag_sql.tag_row(con, name)))
        with store.transaction() as con:
            tag_sql.clear_scores(con, tag_id)
            if done is not None:
                save(con, name, done, examples, tag_id, choice)
                refitted.append(name)
    return refitted

