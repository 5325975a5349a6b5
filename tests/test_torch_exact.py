"""Tests for tagstore.indexes.torch_exact: the torch exact search equals FAISS Flat (CPU tensors here)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch exact search needs torch (the `torch` extra)")

from tagstore.errors import VectorIndexError  # noqa: E402
from tagstore.indexes import build, devices, load  # noqa: E402
from tagstore.indexes.torch_exact import TorchExact  # noqa: E402

DIM = 32
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """2000 seeded vectors under sparse ids, with exact duplicates so that scores tie."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, DIM), dtype=np.float32) * rng.uniform(0.5, 3, (2000, 1)).astype(np.float32)
    vectors[1:60:4] = vectors[0]  # 15 copies of vector 0: a block of tied scores
    vectors[300:310] = vectors[299] * 2
    ids = np.arange(2000, dtype=np.int64) * 5 + 11
    return ids, vectors


@pytest.fixture(scope="module")
def flat(data):
    ids, vectors = data
    return build([(ids, vectors)], "Flat", DIM, "cpu")


def assert_same(faiss_out, torch_out, ids, vectors, queries) -> None:
    """Same scores (within float32 tolerance) and, tie-safe, ids that carry those scores."""
    (fs, fi), (ts, ti) = faiss_out, torch_out
    assert fs.shape == ts.shape and fi.shape == ti.shape
    np.testing.assert_array_equal(np.isneginf(fs), np.isneginf(ts))
    np.testing.assert_array_equal(fi == -1, ti == -1)
    finite = np.isfinite(fs)
    np.testing.assert_allclose(ts[finite], fs[finite], atol=2e-6)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    row = {int(i): r for r, i in enumerate(ids)}
    for q in range(len(queries)):
        got = [int(i) for i in ti[q] if i >= 0]
        assert len(set(got)) == len(got)
        true = np.array([float(unit[row[i]] @ qn[q]) for i in got])
        np.testing.assert_allclose(true, ts[q, : len(got)], atol=1e-5)
        # Where FAISS's and torch's ids differ, it is only among ties.
        differ = ti[q] != fi[q]
        np.testing.assert_allclose(ts[q][differ & finite[q]], fs[q][differ & finite[q]], atol=2e-6)


@pytest.mark.parametrize("chunk_rows", [None, 97, 1])
def test_equals_faiss_flat_on_cpu_tensors(flat, data, chunk_rows) -> None:
    ids, vectors = data
    rng = np.random.default_rng(1)
    queries = np.concatenate([vectors[[0, 299, 7]], rng.standard_normal((9, DIM), dtype=np.float32)])
    exact = TorchExact(ids, flat.vectors(), device="cpu", chunk_rows=chunk_rows)
    for k in (1, 10, 40):  # k=40 crosses the block of 15 tied copies of vector 0
        assert_same(flat.search(queries, k), exact.search(queries, k), ids, vectors, queries)


def test_filters_are_honoured_like_faiss(flat, data) -> None:
    ids, vectors = data
    queries = vectors[[0, 5, 299]]
    exact = TorchExact(ids, flat.vectors(), device="cpu", chunk_rows=300)
    allowed = ids[::7]
    for kw in (
        {"include_ids": allowed},
        {"exclude_ids": ids[:50]},
        {"include_ids": allowed, "exclude_ids": allowed[:10]},
        {"include_ids": ids[:3]},  # fewer allowed than k: padded with -1 / -inf
        {"include_ids": []},
        {"include_ids": np.array([999_999], dtype=np.int64)},  # unknown ids are ignored
    ):
        f, t = flat.search(queries, 10, **kw), exact.search(queries, 10, **kw)
        assert_same(f, t, ids, vectors, queries)
        if "include_ids" in kw:
            assert set(t[1][t[1] >= 0].tolist()) <= set(np.asarray(kw["include_ids"]).tolist())
        if "exclude_ids" in kw:
            assert not set(t[1].ravel().tolist()) & set(np.asarray(kw["exclude_ids"]).tolist())


def test_faiss_index_delegates_to_torch_and_drops_it_on_write(data) -> None:
    ids, vectors = data
    index = build([(ids[:1000], vectors[:1000])], "Flat", DIM, "cpu")
    before = index.search(vectors[:4], 10)
    index.use_torch("cpu")
    assert index.compute == "torch-cpu"
    after = index.search(vectors[:4], 10)
    assert_same(before, after, ids, vectors, vectors[:4])
    index.add(ids[1000:], vectors[1000:])  # a write: back to FAISS, which now sees the new vectors
    assert index.compute == "faiss-cpu"
    assert index.search(vectors[1500:1501], 1)[1][0, 0] == ids[1500]


def test_bad_input_is_refused(data) -> None:
    ids, vectors = data
    exact = TorchExact(ids[:10], vectors[:10] / np.linalg.norm(vectors[:10], axis=1, keepdims=True), device="cpu")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        exact.search(vectors[:1], 0)
    with pytest.raises(ValueError, match=f"shape \\(q, {DIM}\\)"):
        exact.search(vectors[:1, :5], 3)
    with pytest.raises(ValueError, match="float32"):
        TorchExact(ids[:10], vectors[:10].astype(np.float64), device="cpu")
    hnsw = build([(ids[:100], vectors[:100])], "HNSW32", DIM, "cpu")
    with pytest.raises(VectorIndexError, match="only 'Flat'"):
        hnsw.use_torch("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice made on a machine without CUDA")
def test_compute_choice_without_any_gpu(flat, tmp_path) -> None:
    assert devices.search_compute("auto", "Flat") == "faiss-cpu"
    assert devices.search_compute("cpu", "Flat") == "faiss-cpu"
    with pytest.raises(VectorIndexError, match="use device 'cpu'"):
        devices.search_compute("cuda", "Flat")
    flat.save(tmp_path / "i.faiss")
    assert load(tmp_path / "i.faiss", device="auto").compute == "faiss-cpu"


@needs_cuda
def test_cuda_equals_faiss_flat(flat, data, tmp_path) -> None:
    ids, vectors = data
    queries = vectors[:16]
    exact = TorchExact(ids, flat.vectors(), device="cuda", chunk_rows=333)
    for k in (1, 10, 40):
        assert_same(flat.search(queries, k), exact.search(queries, k), ids, vectors, queries)
    flat.save(tmp_path / "i.faiss")
    opened = load(tmp_path / "i.faiss", device="auto")
    assert opened.compute in ("faiss-cuda", "torch-cuda")
    assert_same(flat.search(queries, 10), opened.search(queries, 10), ids, vectors, queries)


def test_info_shows_where_searches_run(tmp_path, library, monkeypatch) -> None:
    from tagstore import api
    from tagstore.config import ConfigError, Settings

    store = api.init(tmp_path / "s", embedders="dsp", runtime={"search_device": "auto"})
    api.add(store, [library])
    _, hits = api.similar(store, "1", k=3)
    assert len(hits) == 3
    compute = api.info(store)["compute"]
    expected = "faiss-cuda" if devices.num_gpus() else ("torch-cuda" if torch.cuda.is_available() else "faiss-cpu")
    assert compute == {"search_device": "auto", "search": expected, "index_built_on": "faiss-cpu" if not devices.num_gpus() else compute["index_built_on"]}
    monkeypatch.setenv("TAGSTORE_SEARCH_DEVICE", "gpu")
    with pytest.raises(ConfigError, match="search_device must be one of cpu, auto, cuda, got 'gpu'"):
        Settings.resolve({}, file={})
