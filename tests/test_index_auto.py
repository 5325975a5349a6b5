"""The index chosen by size (tagstore.indexes.auto) end to end: the plan, the build, tuning, switching,
growth, and filters on IVF. Stores hold seeded synthetic clustered vectors under a synthetic layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from tagstore import api
from tagstore import catalogue as cat
from tagstore.derived import index as derived_index
from tagstore.errors import InputError
from tagstore.indexes import auto, build, create
from tagstore.layout import Block, Layout
from tagstore.store import Store

DIM = 32
CLUSTERS = 40


def clustered(n: int, seed: int) -> np.ndarray:
    """``n`` seeded vectors (n, DIM) float32 around CLUSTERS fixed centres (the shape of audio embeddings)."""
    centres = np.random.default_rng(123).standard_normal((CLUSTERS, DIM)).astype(np.float32) * 3
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, CLUSTERS, n)] + rng.standard_normal((n, DIM))).astype(np.float32)


def fill(store: Store, first_id: int, vectors: np.ndarray) -> None:
    """Append tracks with these raw vectors straight into the catalogue (as ingest would), one change."""
    ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
    blobs = np.empty(len(ids), dtype=object)
    blobs[:] = [v.tobytes() for v in vectors]
    with cat.transaction(store.path) as con:
        con.register("part", {"id": ids, "v": blobs})
        con.execute(
            """INSERT INTO tracks (id, path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate, channels)
               SELECT id, '/music/t' || id || '.flac', 'sha256:' || id, 0, 0, 60.0, 44100, 2 FROM part"""
        )
        con.execute("INSERT INTO embeddings SELECT id, ?, v::BLOB FROM part", [store.layout.digest])
        con.unregister("part")
        cat.bump_generation(con)


def synthetic(path: Path, n: int, factory: str = "auto", seed: int = 0) -> Store:
    Store.init(path, embedders="dsp", factory=factory)
    layout = Layout((Block("synthetic", "1", DIM, 16000, 1.0, 1.0, {}),))
    with cat.transaction(path) as con:
        cat.set_meta(con, "layout", layout.to_json())
    store = Store.open(path)
    store.close()
    fill(store, 1, clustered(n, seed))
    return store


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact search only up to 1,000 tracks of 32-d, so a few thousand tracks get an IVF index."""
    monkeypatch.setattr(auto, "FLAT_MAX_CELLS", 1000 * DIM)


# --- the plan -----------------------------------------------------------------------------------


def test_plan_by_size_and_budget() -> None:
    assert auto.plan(50_000, 1408, 16 << 30).factory == "Flat"
    big = auto.plan(1_000_000, 1408, 16 << 30)
    assert (big.factory, big.family, big.nlist) == ("IVF1024,SQ8", "ivf", 1024)
    assert auto.plan(100_000, 512, 16 << 30).factory == "Flat"  # 5.1e7 floats a query: still exact
    assert auto.plan(1_000_000, 512, 16 << 30).factory == "IVF1024,SQ8"
    assert auto.plan(10_000, 1408, 40 << 20).factory.startswith("IVF")  # Flat (56 MB) over the budget
    pq = auto.plan(1_000_000, 1408, 1 << 30)  # SQ8 needs 1.4 GB: product quantization
    assert pq.factory.startswith("IVF1024,PQ") and 1_000_000 * int(pq.factory.split("PQ")[1]) <= 1 << 30
    with pytest.raises(InputError, match="raise --memory-budget"):
        auto.plan(1_000_000, 1408, 100_000)


def test_parse_size() -> None:
    assert auto.parse_size("8GB") == 8 << 30
    assert auto.parse_size("512mb") == 512 << 20
    assert auto.parse_size("1.5g") == int(1.5 * (1 << 30))
    assert auto.parse_size("2000") == 2000
    for bad in ("lots", "8 parsecs", "0", "-3GB"):
        with pytest.raises(InputError, match="memory-budget"):
            auto.parse_size(bad)


# --- build, tune, record ------------------------------------------------------------------------


def test_small_store_gets_exact_flat(tmp_path: Path) -> None:
    store = synthetic(tmp_path / "s", 300)
    record = derived_index.sync(store)
    assert record.factory == "Flat" and record.params["spec"] == "auto" and record.params["exact"] is True
    assert record.params["choice"]["family"] == "flat"


def test_larger_store_gets_ivf_tuned_to_recall(tmp_path: Path, low_threshold: None) -> None:
    store = synthetic(tmp_path / "s", 4000)
    record = derived_index.sync(store)
    assert record.factory == "IVF64,SQ8" and record.params["choice"]["family"] == "ivf"
    assert record.params["recall_at_10"] >= auto.TARGET_RECALL
    assert 1 <= record.params["nprobe"] < 64 and record.params["train_size"] == 4000
    # Independently: recall@10 of store searches from 100 other tracks against numpy's exact cosine.
    index, rec = derived_index.open_index(store)
    assert index.nprobe == record.params["nprobe"]
    raw = store.embeddings(list(range(1, 4001)))
    unit = derived_index.index_vectors(store, raw, rec)
    queries = np.random.default_rng(7).choice(np.arange(1, 4001), 100, replace=False)
    hits = 0
    for q in queries:
        sims = unit @ unit[q - 1]
        sims[q - 1] = -np.inf
        truth = set((np.argsort(-sims)[:10] + 1).tolist())
        _, found = api.similar(store, str(q), k=10)
        hits += len(truth & {h.id for h in found})
    assert hits / 1000 >= auto.TARGET_RECALL


def test_info_shows_choice_and_measured_recall(tmp_path: Path, low_threshold: None, runner) -> None:
    store = synthetic(tmp_path / "s", 3000)
    derived_index.sync(store)
    data = api.info(store)
    assert data["index_factory"] == "auto" and data["index"]["factory"].startswith("IVF")
    assert data["index"]["recall_at_10"] >= auto.TARGET_RECALL and data["index"]["nprobe"] >= 1
    out = cli(runner, "--store", store.path, "info")
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("index choice"))
    assert "auto: " in line and "recall@10" in line and "nprobe" in line


# --- switching ----------------------------------------------------------------------------------


def test_rebuild_index_switches_type_and_back(tmp_path: Path, runner) -> None:
    store = synthetic(tmp_path / "s", 3000, factory="Flat")
    derived_index.sync(store)
    before = [api.similar(store, str(q), k=10)[1] for q in (5, 999, 2500)]
    out = cli(runner, "--store", store.path, "rebuild", "--index", "IVF32,Flat", "--json")
    assert out.exit_code == 0, out.output
    store = Store.open(store.path)
    store.close()
    assert store.factory == "IVF32,Flat" and api.info(store)["index"]["factory"] == "IVF32,Flat"
    assert api.info(store)["index"]["recall_at_10"] >= auto.TARGET_RECALL
    assert len(list((store.path / cat.INDEX_DIR).glob("index-*.faiss"))) == 1  # the old file is gone
    out = cli(runner, "--store", store.path, "rebuild", "--index", "Flat")
    assert out.exit_code == 0, out.output
    store = Store.open(store.path)
    store.close()
    assert store.factory == "Flat"
    after = [api.similar(store, str(q), k=10)[1] for q in (5, 999, 2500)]
    assert [[(h.id, round(h.score, 6)) for h in hits] for hits in after] == [
        [(h.id, round(h.score, 6)) for h in hits] for hits in before
    ]


def test_rebuild_refuses_bad_index_and_budget(tmp_path: Path, runner) -> None:
    store = synthetic(tmp_path / "s", 100)
    out = cli(runner, "--store", store.path, "rebuild", "--index", "IVFbogus")
    assert out.exit_code == 1 and "IVFbogus" in out.output and len(out.output.strip().splitlines()) == 1
    out = cli(runner, "--store", store.path, "rebuild", "--memory-budget", "lots")
    assert out.exit_code == 1 and "'lots'" in out.output and "8GB" in out.output


# --- growth -------------------------------------------------------------------------------------


def test_growth_moves_flat_to_ivf_and_retrains(tmp_path: Path, low_threshold: None) -> None:
    store = synthetic(tmp_path / "s", 800)
    assert derived_index.sync(store).factory == "Flat"
    fill(store, 801, clustered(1200, seed=1))  # 2000 tracks: past exact search
    grown = derived_index.sync(store)
    assert grown.factory.startswith("IVF") and grown.params["trained_count"] == 2000
    fill(store, 2001, clustered(500, seed=2))  # 1.25x: incremental add into the trained lists
    same = derived_index.sync(store)
    assert same.count == 2500 and same.params["trained_count"] == 2000 and same.factory == grown.factory
    fill(store, 2501, clustered(1600, seed=3))  # 4100 >= 2 x 2000: re-planned and re-trained
    retrained = derived_index.sync(store)
    assert retrained.params["trained_count"] == 4100 and retrained.params["recall_at_10"] >= auto.TARGET_RECALL


# --- filters on IVF -----------------------------------------------------------------------------


def test_ivf_filter_returns_k_when_k_pass() -> None:
    vectors = clustered(5000, seed=4)
    ids = np.arange(5000, dtype=np.int64) * 2 + 1
    index = build([(ids[i : i + 1000], vectors[i : i + 1000]) for i in range(0, 5000, 1000)], "IVF64,Flat", DIM, "cpu")
    index.nprobe = 1
    rng = np.random.default_rng(5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for size in (10, 12, 40, 300):
        allowed = np.sort(rng.choice(ids, size, replace=False))
        queries = clustered(5, seed=size)
        scores, found = index.search(queries, 10, include_ids=allowed)
        assert np.all((found >= 0).sum(axis=1) == 10), size
        assert np.isin(found, allowed).all() and np.all(np.diff(scores, axis=1) <= 1e-6)
        if size == 10:  # exactly k pass: every one of them, with its exact (IVF,Flat) cosine, best first
            q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            sims = q @ unit[(allowed - 1) // 2].T
            np.testing.assert_allclose(scores, -np.sort(-sims, axis=1), atol=1e-5)
    _, found = index.search(clustered(3, seed=9), 10, include_ids=ids[:7])
    assert np.all((found >= 0).sum(axis=1) == 7)  # fewer pass than k: all of them, then padding
    assert index.nprobe == 1  # the wider searches do not change the index


def test_tag_filter_on_ivf_store_returns_k(tmp_path: Path, low_threshold: None) -> None:
    store = synthetic(tmp_path / "s", 3000)
    record = derived_index.sync(store)
    assert record.factory.startswith("IVF")
    api.add_tag(store, "rare", examples=["3", "17", "40"], method="prototype")
    predicted = set(api.predicted_ids(store, "rare").tolist())
    index, _ = derived_index.open_index(store)
    index.nprobe = 1  # the fewest lists: the filter must still not truncate
    for q in ("1", "2000"):
        _, hits = api.similar(store, q, k=10, with_tags=["rare"])
        assert len(hits) == min(10, len(predicted - {int(q)})) and {h.id for h in hits} <= predicted
        _, hits = api.similar(store, q, k=10, without_tags=["rare"])
        assert len(hits) == 10 and not {h.id for h in hits} & predicted


def test_nprobe_setter_checks_range() -> None:
    flat = create("Flat", DIM, "cpu")
    with pytest.raises(Exception, match="not an IVF index"):
        flat.nprobe = 4
    ivf = create("IVF16,Flat", DIM, "cpu")
    with pytest.raises(ValueError, match="from 1 to 16"):
        ivf.nprobe = 17


def test_init_defaults_to_auto_and_keeps_the_budget(tmp_path: Path, runner) -> None:
    out = cli(runner, "--store", tmp_path / "a", "init", "--json")
    assert out.exit_code == 0, out.output
    assert '"index_factory": "auto"' in out.output and '"memory_budget": null' in out.output
    out = cli(runner, "--store", tmp_path / "b", "init", "--memory-budget", "1GB")
    assert out.exit_code == 0, out.output
    store = Store.open(tmp_path / "b")
    store.close()
    assert (store.factory, store.memory_budget) == ("auto", 1 << 30)
    out = cli(runner, "--store", tmp_path / "c", "init", "--memory-budget", "huge")
    assert out.exit_code == 1 and "'huge'" in out.output and not (tmp_path / "c" / "catalogue.duckdb").exists()
