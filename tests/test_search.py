"""Similarity search: equal to an exact numpy cosine search, by id, stored path and outside file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import rows, write_clip

from tagstore import api
from tagstore import catalogue as cat
from tagstore.errors import (
    InputError,
    TrackNotFoundError,
    UnknownTagError,
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


# --- text search and a tag's ranking, with tag filters ------------------------------------------------


@pytest.fixture(scope="module")
def tagged_store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import write_tagged_library

    root = write_tagged_library(tmp_path_factory.mktemp("search") / "music")
    write_clip(root / "odd" / "100%_a_b.wav", "noise", seconds=2.0, seed=9)  # wildcard characters in a name
    store = api.init(root.parent / "store", embedders="dsp")
    api.add(store, [root])
    return store


def _names(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(h.path).name for h in hits]


def test_every_word_must_match_some_field(tagged_store) -> None:  # type: ignore[no-untyped-def]
    store = tagged_store
    assert sorted(_names(api.search_text(store, "harmonics tone"))) == [f"tone_{i:02d}.flac" for i in (0, 4, 8, 12)]
    assert sorted(_names(api.search_text(store, "CHORDS quartet"))) == [f"chord_{i:02d}.flac" for i in (1, 5, 9, 13)]
    assert sorted(_names(api.search_text(store, "noise_0"))) == ["noise_02.flac", "noise_06.flac"]  # the path
    assert api.search_text(store, "harmonics quartet") == []
    everything = api.search_text(store, "", limit=100)
    assert len(everything) == 17 and [h.rank for h in everything] == list(range(1, 18))
    assert all(h.score is None for h in everything)


def test_ordering_and_paging(tagged_store) -> None:  # type: ignore[no-untyped-def]
    store = tagged_store
    hits = api.search_text(store, "study", limit=100)
    keys = [(h.artist or "", h.album or "", h.title or h.path, h.id) for h in hits]
    assert keys == sorted(keys)
    page = api.search_text(store, "study", limit=5, offset=5)
    assert [h.id for h in page] == [h.id for h in hits[5:10]] and page[0].rank == 6
    for bad in ({"limit": 0}, {"limit": 5000}, {"offset": -1}):
        with pytest.raises(InputError, match="limit"):
            api.search_text(store, "x", **bad)


def test_like_wildcards_are_plain_characters(tagged_store) -> None:  # type: ignore[no-untyped-def]
    store = tagged_store
    assert _names(api.search_text(store, "100%")) == ["100%_a_b.wav"]
    assert _names(api.search_text(store, "_a_b")) == ["100%_a_b.wav"]
    assert api.search_text(store, "%%") == [] and api.search_text(store, "e_s") == []  # "_" is no wildcard


def test_tag_ranking_and_filters(tagged_store) -> None:  # type: ignore[no-untyped-def]
    store = tagged_store
    tones = [str(t.id) for t in api.tracks(store) if Path(t.path).name.startswith("tone_")]
    api.add_tag(store, "s-tone", examples=tones[:2])
    ranked = api.tag_tracks(store, "s-tone", limit=17)
    assert [(h.id, h.score) for h in ranked] == [(s.id, pytest.approx(s.score)) for s in api.scores(store, "s-tone", top=17)]
    predicted = set(api.predicted_ids(store, "s-tone").tolist())
    assert {h.id for h in api.search_text(store, "", limit=100, with_tags=["s-tone"])} == predicted
    assert not predicted & {h.id for h in api.search_text(store, "", limit=100, without_tags=["s-tone"])}
    assert {h.id for h in api.tag_tracks(store, "s-tone", limit=17, without_tags=["s-tone"])}.isdisjoint(predicted)
    with pytest.raises(UnknownTagError):
        api.search_text(store, "", with_tags=["nope"])
