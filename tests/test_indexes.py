"""Tests for tagstore.indexes: exact results against numpy, filters, files, verification, devices."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagstore.errors import IndexCorruptError, VectorIndexError
from tagstore.indexes import FaissIndex, IndexFileInfo, build, create, file_checksum, load, verify

DIM = 24


def _has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


needs_gpu = pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU and a GPU build of faiss")
needs_no_gpu = pytest.mark.skipif(_has_gpu(), reason="checks the error raised when no GPU is present")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """1500 seeded vectors under sparse ids, with exact duplicates so that scores tie."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1500, DIM), dtype=np.float32) * rng.uniform(0.5, 3, (1500, 1)).astype(np.float32)
    vectors[1:40:3] = vectors[0]  # ties: 13 copies of vector 0, at different scales
    vectors[100:110] = vectors[99] * 2
    ids = np.arange(1500, dtype=np.int64) * 7 + 3
    return ids, vectors


@pytest.fixture()
def flat(data: tuple[np.ndarray, np.ndarray]) -> FaissIndex:
    ids, vectors = data
    return build([(ids[i : i + 400], vectors[i : i + 400]) for i in range(0, len(ids), 400)], "Flat", DIM, "cpu")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_scores(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> dict[int, np.ndarray]:
    """Cosine of every query against every stored id, computed in float64."""
    sims = unit(queries.astype(np.float64)) @ unit(vectors.astype(np.float64)).T
    return {int(i): sims[:, j] for j, i in enumerate(ids)}


def assert_exact_topk(scores, found, ids, vectors, queries, k, allowed=None) -> None:
    """Tie-safe: the returned scores are numpy's top-k scores, and each returned id has that score."""
    table = exact_scores(ids, vectors, queries)
    candidates = [i for i in map(int, ids) if allowed is None or i in allowed]
    for q in range(len(queries)):
        truth = np.sort(np.array([table[i][q] for i in candidates]))[::-1][:k]
        n = len(truth)
        np.testing.assert_allclose(scores[q, :n], truth, atol=1e-5)
        assert len(set(found[q, :n].tolist())) == n
        for rank in range(n):
            assert found[q, rank] in table and (allowed is None or int(found[q, rank]) in allowed)
            assert abs(table[int(found[q, rank])][q] - scores[q, rank]) < 1e-5
        assert np.all(found[q, n:] == -1) and np.all(np.isneginf(scores[q, n:]))


# --- import cost, interface -------------------------------------------------------------------


def test_import_does_not_load_faiss() -> None:
    code = "import sys, tagstore.indexes; assert 'faiss' not in sys.modules, 'faiss imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_facts(flat: FaissIndex, data) -> None:
    ids, _ = data
    facts = (flat.dim, flat.ntotal, len(flat), flat.factory, flat.metric, flat.device)
    assert facts == (DIM, 1500, 1500, "Flat", "ip", "cpu")
    assert flat.ids().dtype == np.int64 and np.array_equal(flat.ids(), ids)


def test_factory_prefix_is_canonical_and_bad_factory_is_clear() -> None:
    assert create("IDMap2,Flat", 8, "cpu").factory == "Flat"
    with pytest.raises(VectorIndexError, match="Nonsense"):
        create("Nonsense", 8, "cpu")


# --- exact search -----------------------------------------------------------------------------


def test_flat_equals_numpy_cosine(flat: FaissIndex, data) -> None:
    ids, vectors = data
    random = np.random.default_rng(1).standard_normal((5, DIM), dtype=np.float32)
    queries = np.concatenate([vectors[[0, 99, 500]], random])
    scores, found = flat.search(queries, 20)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and scores.shape == found.shape == (8, 20)
    assert_exact_topk(scores, found, ids, vectors, queries, 20)
    assert np.isclose(scores[0, 0], 1.0, atol=1e-5) and np.isclose(scores[0, 13], 1.0, atol=1e-5)  # 14 tied copies


def test_k_larger_than_index_pads(data) -> None:
    ids, vectors = data
    index = build([(ids[:5], vectors[:5])], "Flat", DIM, "cpu")
    scores, found = index.search(vectors[:1], 8)
    assert_exact_topk(scores, found, ids[:5], vectors[:5], vectors[:1], 8)
    empty = create("Flat", DIM, "cpu")
    scores, found = empty.search(vectors[:2], 3)
    assert np.all(found == -1) and np.all(np.isneginf(scores))


@pytest.mark.parametrize("case", ["include", "exclude", "both", "tiny", "absent", "all_excluded"])
def test_filters_equal_numpy_filtered_topk(flat: FaissIndex, data, case: str) -> None:
    ids, vectors = data
    rng = np.random.default_rng(2)
    queries = vectors[[0, 7, 300]]
    include = exclude = None
    if case in ("include", "both"):
        include = rng.choice(ids, 300, replace=False)
    if case in ("exclude", "both"):
        exclude = rng.choice(ids, 600, replace=False)
    if case == "tiny":
        include = [int(ids[5]), int(ids[900]), 10**9]  # 10**9 is not stored
    if case == "absent":
        include = [10**9 + 1]
    if case == "all_excluded":
        include, exclude = ids[:10], set(ids[:10].tolist())
    allowed = set(map(int, ids))
    if include is not None:
        allowed &= set(map(int, include))
    if exclude is not None:
        allowed -= set(map(int, exclude))
    scores, found = flat.search(queries, 10, include_ids=include, exclude_ids=exclude)
    assert scores.shape == (3, 10)
    assert_exact_topk(scores, found, ids, vectors, queries, 10, allowed=allowed)
    if case == "tiny":
        assert np.all((found[:, :2] >= 0)) and np.all(found[:, 2:] == -1)


def test_filters_run_inside_faiss(flat: FaissIndex, data, monkeypatch) -> None:
    """A filtered search passes an ID selector to FAISS, asking for k (not more) results."""
    import faiss

    calls = []
    real = faiss.IndexIDMap2.search

    def spy(self, x, k, *, params=None, D=None, I=None):
        calls.append((k, params))
        return real(self, x, k, params=params, D=D, I=I)

    monkeypatch.setattr(faiss.IndexIDMap2, "search", spy)
    ids, vectors = data
    flat.search(vectors[:1], 5, exclude_ids=ids[:100])
    assert calls[0][0] == 5 and calls[0][1] is not None and calls[0][1].sel is not None


def test_single_query_restores_thread_count(flat: FaissIndex, data) -> None:
    import faiss

    before = faiss.omp_get_max_threads()
    single = flat.search(data[1][:1], 5)
    assert faiss.omp_get_max_threads() == before
    batch = flat.search(data[1][:3], 5)
    assert np.array_equal(single[1][0], batch[1][0])


# --- writing ----------------------------------------------------------------------------------


def test_add_normalises_and_reconstructs(data) -> None:
    ids, vectors = data
    index = create("Flat", DIM, "cpu")
    index.add(ids[:10], vectors[:10])
    np.testing.assert_allclose(index.reconstruct(int(ids[3])), unit(vectors[3:4])[0], atol=1e-6)
    with pytest.raises(KeyError):
        index.reconstruct(10**9)


@pytest.mark.parametrize(
    ("bad_ids", "bad_vectors", "message"),
    [
        (np.arange(2), np.ones((2, DIM)), "float32"),
        (np.arange(2), np.ones((2, DIM + 1), np.float32), "shape"),
        (np.arange(2), np.zeros((2, DIM), np.float32), "all zeros"),
        (np.array([4, 4]), np.ones((2, DIM), np.float32), "duplicates"),
        (np.array([3, 5]), np.ones((2, DIM), np.float32), "already in the index"),
        (np.array([-1, 5]), np.ones((2, DIM), np.float32), ">= 0"),
        (np.arange(3), np.ones((2, DIM), np.float32), "3 ids for 2"),
    ],
)
def test_add_rejects_bad_input(bad_ids, bad_vectors, message) -> None:
    index = create("Flat", DIM, "cpu")
    index.add(np.array([3], np.int64), np.ones((1, DIM), np.float32))
    with pytest.raises(ValueError, match=message):
        index.add(bad_ids, bad_vectors)
    assert index.ntotal == 1


def test_remove(flat: FaissIndex, data) -> None:
    ids, vectors = data
    gone = ids[:50]  # includes all the tied copies of vector 0
    assert flat.remove(np.concatenate([gone, [10**9]])) == 50
    assert flat.remove(gone) == 0 and flat.ntotal == 1450
    assert set(flat.ids().tolist()) == set(ids[50:].tolist())
    scores, found = flat.search(vectors[[0, 60]], 10)
    assert_exact_topk(scores, found, ids[50:], vectors[50:], vectors[[0, 60]], 10)
    flat.add(ids[:1], vectors[:1])  # removed ids can come back
    assert flat.search(vectors[:1], 1)[1][0, 0] == ids[0]


# --- approximate factories --------------------------------------------------------------------


def test_ivf_build_trains_on_seeded_sample(data) -> None:
    ids, vectors = data
    chunks = [(ids[i : i + 500], vectors[i : i + 500]) for i in range(0, len(ids), 500)]
    a = build(chunks, "IVF8,Flat", DIM, "cpu", nprobe=8, train_size=800, seed=3)
    b = build(chunks, "IVF8,Flat", DIM, "cpu", nprobe=8, train_size=800, seed=3)
    queries = vectors[[0, 500, 1000]]
    scores, found = a.search(queries, 10)
    assert_exact_topk(scores, found, ids, vectors, queries, 10)  # nprobe == nlist: exhaustive
    assert np.array_equal(found, b.search(queries, 10)[1])
    scores, found = a.search(queries, 10, include_ids=ids[::2])
    assert_exact_topk(scores, found, ids, vectors, queries, 10, allowed=set(ids[::2].tolist()))


def test_training_needs_a_reiterable_and_enough_vectors(data) -> None:
    ids, vectors = data
    with pytest.raises(VectorIndexError, match="re-iterable"):
        build(iter([(ids, vectors)]), "IVF8,Flat", DIM, "cpu")
    with pytest.raises(VectorIndexError, match="at least 64 vectors.*'Flat'"):
        build([(ids[:20], vectors[:20])], "IVF64,Flat", DIM, "cpu")


def test_hnsw_search_filters_and_refuses_remove(data) -> None:
    ids, vectors = data
    index = build([(ids, vectors)], "HNSW16", DIM, "cpu", ef_search=128)
    assert index.factory == "HNSW16"
    queries = vectors[[0, 200, 800]]
    table = exact_scores(ids, vectors, queries)
    scores, found = index.search(queries, 10)
    truth = np.sort(np.array(list(table.values())), axis=0)[::-1][:10].T
    np.testing.assert_allclose(scores, truth, atol=1e-5)  # small index, high ef: exact in practice
    scores, found = index.search(queries, 10, include_ids=ids[100:400])
    assert np.all(np.isin(found, ids[100:400]))
    with pytest.raises(VectorIndexError, match="cannot remove"):
        index.remove(ids[:1])


# --- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(flat: FaissIndex, data, tmp_path: Path, mmap: bool) -> None:
    ids, vectors = data
    info = flat.save(tmp_path / "tracks.faiss")
    stat = os.stat(info.path)
    assert (info.size, info.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert (info.count, info.dim, info.factory) == (1500, DIM, "Flat")
    assert info.checksum == file_checksum(info.path) and info.checksum.startswith("sha256:")
    assert IndexFileInfo.from_dict(info.as_dict()) == info
    loaded = load(info.path, info, mmap=mmap)
    assert loaded.mmapped is mmap and loaded.factory == "Flat" and np.array_equal(loaded.ids(), ids)
    queries = vectors[[1, 2, 3]]
    got = loaded.search(queries, 10, exclude_ids=ids[:3])
    want = flat.search(queries, 10, exclude_ids=ids[:3])
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert load(info.path).factory == "Flat"  # described from the file when no record is given


def test_mapped_load_prefetches_unless_checksum_read_it(flat: FaissIndex, tmp_path: Path, monkeypatch) -> None:
    from tagstore.indexes import files

    reads: list[Path] = []
    monkeypatch.setattr(files, "prefetch", reads.append)
    info = flat.save(tmp_path / "tracks.faiss")
    load(info.path, info)
    load(info.path, info, prefetch=False)
    load(info.path, info, mmap=False)
    assert reads == [info.path]
    os.utime(info.path, ns=(info.mtime_ns + 1, info.mtime_ns + 1))  # fingerprint differs: checksum reads it
    load(info.path, info)
    assert reads == [info.path]


def test_an_ivf_file_is_mapped_not_prefetched(data, tmp_path: Path, monkeypatch) -> None:
    """FAISS reads an IVF index's lists whole: a prefetch before it would read the file twice."""
    from tagstore.indexes import files

    ids, vectors = data
    ivf = build([(ids, vectors)], "IVF8,SQ8", DIM, "cpu", nprobe=8)
    flat_info = build([(ids, vectors)], "Flat", DIM, "cpu").save(tmp_path / "flat.faiss")
    ivf_info = ivf.save(tmp_path / "ivf.faiss")
    assert files.holds_inverted_lists(ivf_info.path) and not files.holds_inverted_lists(flat_info.path)
    reads: list[Path] = []
    monkeypatch.setattr(files, "prefetch", reads.append)
    loaded = load(ivf_info.path, ivf_info)
    load(flat_info.path, flat_info)
    assert reads == [flat_info.path]
    assert loaded.mmapped  # the inverted lists are mapped from the file, not read
    got = loaded.search(vectors[:3], 5)
    want = ivf.search(vectors[:3], 5)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    loaded.add(np.array([10**6], np.int64), vectors[:1])  # writing first reads an in-memory copy
    assert not loaded.mmapped and loaded.ntotal == len(ids) + 1
    assert loaded.remove(np.array([10**6], np.int64)) == 1
    got = loaded.search(vectors[:3], 5)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    verify(ivf_info.path, ivf_info)  # the file is untouched


def test_mmapped_index_becomes_writable(flat: FaissIndex, data, tmp_path: Path) -> None:
    ids, vectors = data
    info = flat.save(tmp_path / "tracks.faiss")
    loaded = load(info.path, info)
    assert loaded.mmapped
    loaded.add(np.array([10**6], np.int64), vectors[:1])
    assert loaded.remove(ids[:2]) == 2 and not loaded.mmapped and loaded.ntotal == 1499
    verify(info.path, info)  # the file on disk is untouched


def test_atomic_save_survives_failure_halfway(flat: FaissIndex, data, tmp_path: Path, monkeypatch) -> None:
    import faiss

    ids, vectors = data
    old = create("Flat", DIM, "cpu")
    old.add(ids[:3], vectors[:3])
    path = tmp_path / "tracks.faiss"
    before = old.save(path)
    limit = 1500 * DIM * 4 // 2
    real = faiss.PyCallbackIOWriter

    def failing_writer(sink, *args):
        written = 0

        def half(buf: bytes) -> None:
            nonlocal written
            if written + len(buf) > limit:
                sink(buf[: limit - written])
                raise OSError(28, "No space left on device")
            written += len(buf)
            sink(buf)

        return real(half, *args)

    monkeypatch.setattr(faiss, "PyCallbackIOWriter", failing_writer)
    with pytest.raises(VectorIndexError, match="No space left"):
        flat.save(path)
    assert os.listdir(tmp_path) == ["tracks.faiss"]  # no temp file left behind
    verify(path, before)
    assert load(path, before).ntotal == 3


def flip_middle(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        chunk = fh.read(16)
        fh.seek(-16, os.SEEK_CUR)
        fh.write(bytes(b ^ 0xFF for b in chunk))


def test_flipped_bytes_are_detected(flat: FaissIndex, tmp_path: Path) -> None:
    info = flat.save(tmp_path / "tracks.faiss")
    flip_middle(info.path)
    pattern = (
        r"tracks.faiss does not match the catalogue: "
        r"checksum expected sha256:\w+, found sha256:\w+; run `tagstore rebuild`$"
    )
    with pytest.raises(IndexCorruptError, match=pattern):
        load(info.path, info)
    with pytest.raises(IndexCorruptError, match="checksum"):
        verify(info.path, info)


def test_unchanged_fingerprint_is_trusted_full_verify_is_not(flat: FaissIndex, tmp_path: Path) -> None:
    """Documented trade-off: load skips the checksum when size and mtime_ns match the record."""
    info = flat.save(tmp_path / "tracks.faiss")
    flip_middle(info.path)
    os.utime(info.path, ns=(info.mtime_ns, info.mtime_ns))
    verify(info.path, info, full=False)
    assert load(info.path, info).ntotal == 1500
    with pytest.raises(IndexCorruptError, match="checksum"):
        verify(info.path, info, full=True)


def test_truncated_file_is_detected(flat: FaissIndex, tmp_path: Path) -> None:
    info = flat.save(tmp_path / "tracks.faiss")
    os.truncate(info.path, info.size // 2)
    with pytest.raises(IndexCorruptError, match=f"size expected {info.size} bytes, found {info.size // 2} bytes"):
        load(info.path, info)
    with pytest.raises(IndexCorruptError, match="cannot be read by FAISS.*tagstore rebuild"):
        load(info.path)  # without a record, FAISS itself refuses the short file


def test_deleted_file_is_reported_missing(flat: FaissIndex, tmp_path: Path) -> None:
    info = flat.save(tmp_path / "tracks.faiss")
    os.remove(info.path)
    for call in (lambda: load(info.path, info), lambda: load(info.path), lambda: verify(info.path, info)):
        with pytest.raises(IndexCorruptError, match=r"tracks.faiss is missing; run `tagstore rebuild`"):
            call()


@pytest.mark.parametrize(
    ("field", "message"),
    [("count", "count expected 1501, found 1500"), ("dim", f"dim expected {DIM + 1}, found {DIM}")],
)
def test_count_and_dim_mismatch_are_detected(flat: FaissIndex, tmp_path: Path, field: str, message: str) -> None:
    info = flat.save(tmp_path / "tracks.faiss")
    wrong = dataclasses.replace(info, **{field: getattr(info, field) + 1})
    with pytest.raises(IndexCorruptError, match=message):
        load(info.path, wrong)


def test_foreign_faiss_file_is_rejected(tmp_path: Path) -> None:
    import faiss

    faiss.write_index(faiss.IndexFlatL2(DIM), str(tmp_path / "other.faiss"))
    with pytest.raises(IndexCorruptError, match="inner-product IDMap2"):
        load(tmp_path / "other.faiss")


# --- devices ----------------------------------------------------------------------------------


@needs_no_gpu
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(VectorIndexError, match="'cuda' was asked for but FAISS sees no GPU"):
        create("Flat", DIM, "cuda")
    assert create("Flat", DIM, "auto").device == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        create("Flat", DIM, "gpu")


@needs_gpu
def test_gpu_flat_matches_cpu_and_round_trips(flat: FaissIndex, data, tmp_path: Path) -> None:
    ids, vectors = data
    gpu = build([(ids, vectors)], "Flat", DIM, "cuda")
    assert gpu.device == "cuda"
    queries = vectors[[0, 5, 700]]
    scores, found = gpu.search(queries, 10)
    assert_exact_topk(scores, found, ids, vectors, queries, 10)
    scores, found = gpu.search(queries, 10, include_ids=ids[::3])
    assert_exact_topk(scores, found, ids, vectors, queries, 10, allowed=set(ids[::3].tolist()))
    assert gpu.remove(ids[:3]) == 3
    info = gpu.save(tmp_path / "gpu.faiss")
    assert load(info.path, info, device="cuda").device == "cuda"
    assert np.array_equal(load(info.path, info).ids(), ids[3:])


@needs_gpu
def test_gpu_refuses_cpu_only_factory() -> None:
    with pytest.raises(VectorIndexError, match="no GPU implementation"):
        create("HNSW32", DIM, "cuda")
