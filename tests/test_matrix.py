"""The memory-mapped copy of the embeddings is derived: stale, missing or altered files are rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_clip

from tagstore import api
from tagstore.derived.matrix import matrix
from tagstore.store import Store


def _matrix(store: Store) -> tuple[np.ndarray, np.ndarray]:
    with store.write_lock():
        m = matrix(store)
        ids, vecs = m.ids, m.vectors
        return ids.copy(), np.array(vecs)


def test_matrix_equals_catalogue_and_follows_changes(store: Store, library: Path, tmp_path: Path) -> None:
    api.add(store, [library / "a"])
    ids, vecs = _matrix(store)
    assert sorted(ids.tolist()) == [t.id for t in store.tracks()]
    np.testing.assert_array_equal(vecs, store.embeddings(ids.tolist()))
    files = sorted(p.name for p in (store.path / "cache").iterdir())
    assert _matrix(store)[0].tolist() == ids.tolist()
    assert sorted(p.name for p in (store.path / "cache").iterdir()) == files  # reused, not rewritten
    api.add(store, [write_clip(tmp_path / "x" / "new.wav", "noise", 2.0, seed=5)])  # generation moves on
    ids2, _ = _matrix(store)
    assert len(ids2) == len(ids) + 1
    assert len(list((store.path / "cache").glob("*.npy"))) == 2  # old copy removed


def test_altered_or_missing_files_are_rebuilt(store: Store, library: Path) -> None:
    api.add(store, [library / "a"])
    ids, vecs = _matrix(store)
    (vec_file,) = (store.path / "cache").glob("vectors-*.npy")
    data = bytearray(vec_file.read_bytes())
    data[-8:] = b"\xff" * 8
    vec_file.write_bytes(bytes(data))  # same size, new mtime
    np.testing.assert_array_equal(_matrix(store)[1], vecs)
    for f in (store.path / "cache").glob("*.npy"):
        f.unlink()
    np.testing.assert_array_equal(_matrix(store)[1], vecs)


def test_large_store_copy_is_bfloat16(tmp_path: Path, monkeypatch) -> None:
    from test_index_auto import fill, synthetic

    from tagstore.derived import matrix as matrix_mod
    from tagstore.catalogue import tags as tag_sql
    from tagstore.learning import TagModel, score_tags

    monkeypatch.setattr(matrix_mod, "BF16_FROM", 100 * 32 * 4)  # 100 tracks of the 32-d layout
    store = synthetic(tmp_path / "s", 400)
    with store.write_lock():
        mat = matrix_mod.matrix(store)
        assert mat.encoding == "bfloat16" and mat.stored.dtype == np.uint16
        ids, vecs = mat.ids.copy(), mat.vectors
        exact = store.embeddings(ids.tolist())
        np.testing.assert_allclose(vecs, exact, rtol=2**-8)  # 8 significant bits, rounded
        assert np.abs(vecs - exact).max() > 0  # really rounded
        np.testing.assert_array_equal(mat.rows(ids[[5, 0, 7]]), vecs[[5, 0, 7]])
        assert np.concatenate([v.copy() for _, v in mat.chunks(size=64)]).tolist() == vecs.tolist()
    (vec_file,) = (store.path / "cache").glob("vectors-*.npy")
    assert vec_file.stat().st_size < 400 * exact.shape[1] * 2 + 200  # half the float32 bytes
    summary = api.add_tag(store, "t", examples=["3", "9", "27"], method="probe")
    scores = dict((s.id, s.score) for s in api.scores(store, "t", top=None))
    with store.reader() as con:
        (row,) = [r for r in tag_sql.learned_models(con, ["t"])]
    model = TagModel.from_bytes(row[2])
    want = score_tags([model], exact)[:, 0]
    got = np.array([scores[int(i)] for i in ids])
    assert summary.scored == 400 and np.max(np.abs(got - want)) < 2e-2 * (want.max() - want.min())
    fill(store, 401, np.full((1, exact.shape[1]), 1e30, np.float32))  # far beyond float16's range
    _, vecs = _matrix(store)
    np.testing.assert_allclose(vecs[-1], 1e30, rtol=2**-8)
