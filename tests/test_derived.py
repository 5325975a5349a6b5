"""The derived index: rebuilt when deleted or corrupted, caught up after an interrupted sync, held across queries."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_clip

from tagstore import api
from tagstore import catalogue as cat
from tagstore.store import Store


def test_deleted_index_is_rebuilt(store: Store, library: Path, caplog: pytest.LogCaptureFixture) -> None:
    api.add(store, [library])
    before = api.similar(store, 1, k=5)[1]
    (f,) = list((store.path / "index").glob("index-*.faiss"))
    f.unlink()
    with caplog.at_level("WARNING", logger="tagstore"):
        after = api.similar(store, 1, k=5)[1]
    assert "missing" in caplog.text and "rebuilding" in caplog.text
    assert [h.id for h in after] == [h.id for h in before]
    assert len(list((store.path / "index").glob("index-*.faiss"))) == 1


def test_corrupted_index_is_rebuilt(store: Store, library: Path, caplog: pytest.LogCaptureFixture) -> None:
    api.add(store, [library])
    before = api.similar(store, 2, k=5)[1]
    (f,) = list((store.path / "index").glob("index-*.faiss"))
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)  # same size, other content
    f.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="tagstore"):
        after = api.similar(store, 2, k=5)[1]
    assert "checksum" in caplog.text and "rebuilding" in caplog.text
    assert [(h.id, round(h.score, 5)) for h in after] == [(h.id, round(h.score, 5)) for h in before]
    info = api.info(store)["index"]
    assert info["current"] and info["version"] == 2


def test_index_catches_up_after_interrupted_sync(store: Store, library: Path) -> None:
    api.add(store, [library / "a"])
    # Simulate a run killed after committing a batch but before updating the index.
    with cat.transaction(store.path) as con:
        con.execute("DELETE FROM embeddings WHERE track_id = 1")
        con.execute("DELETE FROM tracks WHERE id = 1")
        cat.bump_generation(con)
    _, hits = api.similar(store, 2, k=10)
    assert 1 not in [h.id for h in hits] and api.info(store)["index"]["current"]


def test_repeated_queries_reuse_the_loaded_index(store: Store, library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tagstore import indexes

    api.add(store, [library])
    loads = []
    real = indexes.load
    monkeypatch.setattr(indexes, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = [api.similar(store, i, k=3)[1] for i in (1, 2, 3)]
    assert len(loads) == 1
    api.add(store, [write_clip(library / "c" / "extra.wav", "noise", 2.0, seed=42)])  # a new index version
    before = len(loads)
    assert len(api.similar(store, 1, k=20)[1]) == 12 and len(loads) == before + 1
    assert [h.id for h in api.similar(store, 1, k=3)[1]] == [h.id for h in first[0]] and len(loads) == before + 1
