"""Similarity search: equal to an exact numpy cosine search, by id, stored path and outside file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import rows, write_clip

from tagstore import api
from tagstore import catalogue as cat
from tagstore.errors import (
    TrackNotFoundError,
)
from tagstore.layout import normalise_blocks
from tagstore.store import Store


def _exact_top_k(store: Store, query_id: int, k: int) -> tuple[list[int], np.ndarray]:
    from tagstore.derived.index import active_record

    with cat.reading(store.path) as con:
        record = active_record(con)
    ids = [r[0] for r in rows(store, "SELECT track_id FROM embeddings ORDER BY track_id")]
    vecs = normalise_blocks(store.embeddings(ids), store.layout, record.stats_mean, record.stats_std)
    q = vecs[ids.index(query_id)]
    sims = vecs @ q
    order = [i for i in np.argsort(-sims, kind="stable") if ids[i] != query_id][:k]
    return [ids[i] for i in order], sims[order]


@pytest.mark.parametrize("n_extra", [0, 20])  # below and above the catalogue-statistics threshold
def test_search_equals_exact_numpy_cosine(store: Store, library: Path, tmp_path: Path, n_extra: int) -> None:
    for i in range(n_extra):
        write_clip(tmp_path / "more" / f"x{i}.wav", ("tone", "noise", "chord", "clicks")[i % 4], 2.0, seed=100 + i)
    api.add(store, [library] + ([tmp_path / "more"] if n_extra else []))
    for qid in (1, 5, 9):
        q, hits = api.similar(store, qid, k=6)
        ids, sims = _exact_top_k(store, qid, 6)
        assert q.track_id == qid and qid not in [h.id for h in hits]
        np.testing.assert_allclose([h.score for h in hits], sims, rtol=1e-5, atol=1e-5)
        # ids agree wherever scores are not tied
        for h, i, s in zip(hits, ids, sims):
            if np.sum(np.isclose(sims, s, atol=1e-6)) == 1:
                assert h.id == i


def test_query_by_path_and_by_outside_file(store: Store, library: Path, tmp_path: Path) -> None:
    api.add(store, [library])
    stored = store.tracks(limit=1)[0]
    q, hits = api.similar(store, stored.path, k=3)
    assert q.track_id == stored.id and len(hits) == 3
    outside = write_clip(tmp_path / "outside.wav", "noise", 2.5, seed=7)
    q2, hits2 = api.similar(store, str(outside), k=3)
    assert q2.track_id is None and len(hits2) == 3
    assert "noise" in Path(hits2[0].path).name  # noise is nearest to noise
    with pytest.raises(TrackNotFoundError, match="no track '9999'"):
        api.similar(store, "9999")
