"""Labels from a CSV (``tagstore import-labels``): many tags created or extended in one all-or-nothing step.

Columns: ``path`` (absolute, relative to the CSV's folder, or a stored path) or ``id`` (a catalogue id),
``tags`` (``;``-separated positives) and optionally ``negative_tags``; other columns (the eval labels'
``track`` and ``split``) are ignored, so the evaluation's labels CSV imports as it is. Every row is
checked before anything is fitted, and every tag is saved in one transaction: a bad row changes nothing.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from tagstore.catalogue import tags as tag_sql
from tagstore.derived.matrix import matrix
from tagstore.errors import InputError, TagError
from tagstore.store import Store
from tagstore.tags import fitting
from tagstore.tags.examples import Example, check_tag_name, merge, stored_examples
from tagstore.tags.views import TagSummary, list_tags


@dataclass
class Labels:
    """What the CSV says: per tag, the catalogue ids of its positives and negatives."""

    positives: dict[str, set[int]]
    negatives: dict[str, set[int]]
    rows: int


def _split(cell: str | None, where: str) -> list[str]:
    out = []
    for part in (cell or "").split(";"):
        if part.strip():
            try:
                out.append(check_tag_name(part))
            except TagError as exc:
                raise TagError(f"{where}: {exc} (nothing was imported)") from None
    return out


def read_labels(store: Store, path: str | os.PathLike[str]) -> Labels:
    """Parse and check the CSV; InputError naming the row and the value for the first bad row."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no labels file {p}; give a CSV with columns path (or id) and tags")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if "tags" not in header or not ({"path", "id"} & set(header)):
            raise InputError(f"{p}: the header {','.join(header) or '(empty)'} lacks 'tags' and 'path' or 'id'; "
                             "give columns path (or id), tags and optionally negative_tags")  # fmt: skip
        pos: dict[str, set[int]] = {}
        neg: dict[str, set[int]] = {}
        n = 0
        with store.reader() as con:
            for line, row in enumerate(reader, start=2):
                where = f"{p.name} line {line}"
                id_text = (row.get("id") or "").strip()
                ref = id_text or (row.get("path") or "").strip()
                if not ref:
                    raise InputError(f"{where}: no path or id (nothing was imported)")
                if id_text:
                    track = store.find(id_text, con) if id_text.isdigit() else None
                else:  # relative to the CSV's folder first (as the eval labels are), else as given
                    track = store.find(str(p.parent / ref), con) or store.find(ref, con)
                if track is None:
                    raise InputError(f"{where}: {ref!r} is not a track in the store; add it with `tagstore add` "
                                     "or fix the row (nothing was imported)")  # fmt: skip
                for name in _split(row.get("tags"), where):
                    pos.setdefault(name, set()).add(track.id)
                for name in _split(row.get("negative_tags"), where):
                    if track.id in pos.get(name, ()):
                        raise InputError(f"{where}: {ref!r} is both a positive and a negative of {name!r} "
                                         "(nothing was imported)")  # fmt: skip
                    neg.setdefault(name, set()).add(track.id)
                n += 1
    return Labels(pos, neg, n)


def import_labels(store: Store, path: str | os.PathLike[str]) -> list[TagSummary]:
    """Create or extend every tag the CSV names, refit each and save them all in one transaction.

    The caller holds the write lock. Returns the summaries of the tags, by name.
    """
    labels = read_labels(store, path)
    names = sorted(set(labels.positives) | set(labels.negatives))
    if not names:
        raise InputError(f"{Path(path).name} names no tags; fill the tags column (tag names separated by ';')")
    mat = matrix(store)
    fitted = []
    with store.reader() as con:
        for name in names:
            row = tag_sql.tag_row(con, name)
            if row is not None and row.kind != "learned":
                raise TagError(f"{name!r} is a {row.kind} tag; it cannot get examples (nothing was imported)")
            new = [Example(1, i, "") for i in sorted(labels.positives.get(name, ()))]
            new += [Example(0, i, "") for i in sorted(labels.negatives.get(name, ()))]
            merged = merge(stored_examples(con, row.id) if row else [], new)
            if not any(e.label > 0 for e in merged):
                raise TagError(f"tag {name!r} has negatives but no positive example; add rows with it in "
                               "the tags column (nothing was imported)")  # fmt: skip
            choice = (row.method_choice if row else None) or fitting.DEFAULT_METHOD
            fitted.append((name, row.id if row else None, merged, choice, fitting.refit(store, con, name, merged, choice, mat)))
    with store.transaction() as con:
        for name, tag_id, merged, choice, done in fitted:
            fitting.save(con, name, done, merged, tag_id, choice)
        return list_tags(store, con, names=names)
