"""The store end to end in-process: ingest, idempotence, failures, search, the derived index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import write_clip

from tagstore import api
from tagstore import catalogue as cat
from tagstore.errors import (
    PathNotFoundError,
    StoreBusyError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
    TrackNotFoundError,
)
from tagstore.layout import normalise_blocks
from tagstore.store import Store


def _rows(store: Store, sql: str) -> list[tuple]:
    with cat.reading(store.path) as con:
        return con.execute(sql).fetchall()


def test_add_is_idempotent(store: Store, library: Path) -> None:
    first = api.add(store, [library])
    assert len(first.added) == 12 and not first.failed
    again = api.add(store, [library])
    assert again.added == [] and len(again.skipped) == 12
    assert all("already in the store" in s["reason"] for s in again.skipped)
    assert _rows(store, "SELECT count(*), count(DISTINCT content_hash) FROM tracks") == [(12, 12)]
    assert _rows(store, "SELECT count(*) FROM embeddings") == [(12,)]


def test_same_content_under_another_path_is_skipped(store: Store, library: Path, tmp_path: Path) -> None:
    api.add(store, [library / "a"])
    copy = tmp_path / "copy.wav"
    copy.write_bytes(next((library / "a").iterdir()).read_bytes())
    report = api.add(store, [copy])
    assert report.added == [] and "same content" in report.skipped[0]["reason"]


def test_bad_file_in_folder_is_skipped_with_reason(store: Store, library: Path) -> None:
    (library / "a" / "notes.wav").write_text("this is not audio")
    write_clip(library / "b" / "quiet.wav", "silence", seconds=2.0)
    write_clip(library / "b" / "blip.wav", "tone", seconds=0.1)
    report = api.add(store, [library])
    assert len(report.added) == 12
    failed = {Path(f["path"]).name: f for f in report.failed}
    assert failed["notes.wav"]["error"] == "NotAudioError"
    assert failed["quiet.wav"]["error"] == "SilentAudioError"
    assert failed["blip.wav"]["error"] == "TooShortAudioError"
    assert "notes.wav" in failed["notes.wav"]["reason"]
    assert {Path(f["path"]).name for f in store.failures()} == set(failed)
    # Fixing a file and adding again clears its failure record.
    write_clip(library / "a" / "notes.wav", "chord", seconds=2.0, seed=99)
    api.add(store, [library])
    assert "notes.wav" not in {Path(f["path"]).name for f in store.failures()}


def test_dry_run_changes_nothing(store: Store, library: Path) -> None:
    report = api.add(store, [library], dry_run=True)
    assert len(report.added) == 12 and report.dry_run
    assert _rows(store, "SELECT count(*) FROM tracks") == [(0,)]


def test_missing_path_raises_before_anything_is_added(store: Store, library: Path) -> None:
    with pytest.raises(PathNotFoundError, match="nothing was added"):
        api.add(store, [library, library / "nope"])
    assert _rows(store, "SELECT count(*) FROM tracks") == [(0,)]


def _exact_top_k(store: Store, query_id: int, k: int) -> tuple[list[int], np.ndarray]:
    from tagstore.derived.index import active_record

    with cat.reading(store.path) as con:
        record = active_record(con)
    ids = [r[0] for r in _rows(store, "SELECT track_id FROM embeddings ORDER BY track_id")]
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


def test_remove_drops_track_from_catalogue_and_index(store: Store, library: Path) -> None:
    api.add(store, [library])
    removed = api.remove(store, ["3"])
    assert [t.id for t in removed] == [3]
    assert _rows(store, "SELECT count(*) FROM tracks WHERE id = 3") == [(0,)]
    assert all(h.id != 3 for h in api.similar(store, 1, k=20)[1])
    assert api.info(store)["index"]["count"] == 11
    with pytest.raises(TrackNotFoundError):
        api.remove(store, ["3"])


def test_index_catches_up_after_interrupted_sync(store: Store, library: Path) -> None:
    api.add(store, [library / "a"])
    # Simulate a run killed after committing a batch but before updating the index.
    with cat.transaction(store.path) as con:
        con.execute("DELETE FROM embeddings WHERE track_id = 1")
        con.execute("DELETE FROM tracks WHERE id = 1")
        cat.bump_generation(con)
    _, hits = api.similar(store, 2, k=10)
    assert 1 not in [h.id for h in hits] and api.info(store)["index"]["current"]


def test_init_and_open_errors(tmp_path: Path, store: Store) -> None:
    with pytest.raises(StoreExistsError):
        Store.init(store.path)
    with pytest.raises(StoreNotFoundError, match="tagstore init"):
        Store.open(tmp_path / "nowhere")
    with cat.transaction(store.path) as con:
        cat.set_meta(con, "format_version", str(cat.FORMAT_VERSION + 1))
    with pytest.raises(StoreFormatError, match="upgrade tagstore"):
        Store.open(store.path)
    other = tmp_path / "other"
    other.mkdir()
    duckdb.connect(str(other / cat.CATALOGUE_FILE)).close()
    with pytest.raises(StoreFormatError, match="not a tagstore catalogue"):
        Store.open(other)


def test_second_writer_is_refused(store: Store, library: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from tagstore.catalogue import WriteLock; from pathlib import Path;"
         "l = WriteLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(30)",
         str(store.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match=rf"pid {holder.pid}\) is writing"):
            api.add(store, [library])
    finally:
        holder.kill()
        holder.wait()
    assert len(api.add(store, [library]).added) == 12


def test_killed_ingest_resumes_without_loss_or_duplicates(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    n = 40
    for i in range(n):
        write_clip(folder / f"clip{i:03d}.wav", ("tone", "noise", "chord", "clicks")[i % 4], 4.0, seed=i)
    exe = Path(sys.executable).with_name("tagstore")
    env = {**os.environ, "TAGSTORE_STORE": str(store.path)}
    proc = subprocess.Popen([str(exe), "-q", "add", str(folder), "--batch-size", "2"], env=env)
    committed = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = _rows(store, "SELECT count(*) FROM tracks")[0][0]
            except StoreBusyError:
                committed = 0
            if committed >= 4:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _rows(store, "SELECT count(*) FROM tracks")[0][0]
    assert 4 <= partial < n, "the run must have been killed part-way"
    assert _rows(store, "SELECT count(*) FROM embeddings")[0][0] == partial  # whole batches only
    report = api.add(store, [folder])
    assert len(report.added) == n - partial and len(report.skipped) == partial and not report.failed
    assert _rows(store, "SELECT count(*), count(DISTINCT path), count(DISTINCT content_hash) FROM tracks") == [(n, n, n)]
    assert _rows(store, "SELECT count(*) FROM embeddings")[0][0] == n
    assert api.info(store)["index"]["count"] == n
    assert len(api.similar(store, 1, k=n)[1]) == n - 1


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
