"""Keeping learned tags in step with the catalogue: refit the tags whose examples were removed with their tracks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tagstore.catalogue import tags as tag_sql
from tagstore.derived.matrix import matrix
from tagstore.store import Store
from tagstore.tags import fitting
from tagstore.tags.examples import stored_examples

log = logging.getLogger("tagstore")


def refit_tags(store: Store, tag_ids: Sequence[int]) -> list[str]:
    """Refit the learned tags ``tag_ids`` from the examples they have left and rescore every track.

    A tag left without positive examples keeps no scores (with a warning) until it gets some. Returns the
    names of the tags refitted or cleared. The caller holds the write lock.
    """
    wanted = set(tag_ids)
    with store.reader() as con:
        learned = [t for t in tag_sql.learned_tags(con) if t[0] in wanted]
    if not learned:
        return []
    mat = matrix(store)
    out = []
    for tag_id, name, method in learned:
        choice = method or fitting.DEFAULT_METHOD
        done = None
        with store.reader() as con:
            examples = stored_examples(con, tag_id)
            if any(e.label > 0 for e in examples):
                done = fitting.refit(store, con, name, examples, choice, mat)
            else:
                log.warning("tag %r has no positive examples left; it keeps no scores until you add some", name)
        with store.transaction() as con:
            tag_sql.clear_scores(con, tag_id)
            if done is not None:
                fitting.save(con, name, done, examples, tag_id, choice)
        out.append(name)
    return out
