"""Tests for tagstore.bulk: embedding shards (export, import, layout checks) and bulk ingest on a local Ray."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="embedding shards need pyarrow (the `ray` extra)")

from conftest import cli, write_clip  # noqa: E402

from tagstore import api, bulk  # noqa: E402
from tagstore.catalogue import reading  # noqa: E402
from tagstore.catalogue import tracks as track_sql  # noqa: E402
from tagstore.errors import InputError, LayoutMismatchError  # noqa: E402


@pytest.fixture
def folder(library: Path) -> Path:
    """The 12-clip library plus a copy of one clip under another name and a silent file (a failure)."""
    shutil.copy(library / "a" / "tone_00.wav", library / "b" / "zz_copy.wav")
    write_clip(library / "b" / "silent.wav", "silence", seconds=2.0)
    return library


def snapshot(store) -> dict:
    """What must match between two stores: id, path, embedding per content hash; failures; neighbours."""
    with reading(store.path) as con:
        rows = track_sql.embedded_tracks(con)
        failures = sorted((f["path"], f["error"]) for f in track_sql.failures(con))
    ids = [r[0] for r in rows]
    vectors = dict(zip(ids, store.embeddings(ids)))
    neighbours = {h: [(x.id, round(x.score, 5)) for x in api.similar(store, str(i), k=4)[1]] for i, _, h in rows}
    return {
        "tracks": {h: (i, p) for i, p, h in rows}, "vectors": {h: vectors[i] for i, _, h in rows},
        "failures": failures, "neighbours": neighbours,
    }  # fmt: skip


def assert_same_store(a: dict, b: dict) -> None:
    assert a["tracks"] == b["tracks"]  # same ids (and paths) per content hash
    for h, v in a["vectors"].items():
        np.testing.assert_allclose(b["vectors"][h], v, rtol=1e-5, atol=1e-6)
    assert a["failures"] == b["failures"]
    for h, hits in a["neighbours"].items():
        assert [i for i, _ in b["neighbours"][h]] == [i for i, _ in hits]
        np.testing.assert_allclose([s for _, s in b["neighbours"][h]], [s for _, s in hits], atol=1e-4)


@pytest.fixture
def plain(tmp_path: Path, folder: Path):
    store = api.init(tmp_path / "plain", embedders="dsp")
    report = api.add(store, [folder])
    assert len(report.added) == 12 and len(report.failed) == 1 and len(report.skipped) == 1
    return store


# --- shards without Ray ---------------------------------------------------------------------------


def test_export_then_import_gives_the_same_store(plain, tmp_path: Path) -> None:
    done = api.export_embeddings(plain, tmp_path / "shards")
    assert done["tracks"] == 12 and done["shards"] == 1 and done["layout_digest"] == plain.layout.digest
    other = api.init(tmp_path / "other", embedders="dsp")
    report = api.import_embeddings(other, tmp_path / "shards")
    assert len(report.added) == 12 and report.index_version is not None
    a, b = snapshot(plain), snapshot(other)
    a["failures"] = []  # failures are not exported: only tracks with embeddings travel
    assert_same_store(a, b)
    again = api.import_embeddings(other, tmp_path / "shards")  # idempotent
    assert not again.added and len(again.skipped) == 12
    with pytest.raises(InputError, match="already holds shards"):
        api.export_embeddings(plain, tmp_path / "shards")


def test_import_refuses_another_layout(plain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api.export_embeddings(plain, tmp_path / "shards")
    from tagstore.embedders.dsp import DSPEmbedder

    monkeypatch.setattr(DSPEmbedder, "version", property(lambda self: "dsp-other"))
    other = api.init(tmp_path / "other", embedders="dsp")
    assert other.layout.digest != plain.layout.digest
    with pytest.raises(LayoutMismatchError) as err:
        api.import_embeddings(other, tmp_path / "shards")
    message = str(err.value)
    assert plain.layout.digest in message and other.layout.digest in message and "nothing was imported" in message
    assert "\n" not in message
    assert api.info(other)["counts"]["tracks"] == 0


def test_cli_export_import_and_refusal(runner, plain, tmp_path: Path) -> None:
    out = cli(runner, "--store", plain.path, "export-embeddings", tmp_path / "x", "--json")
    assert out.exit_code == 0, out.output
    api.init(tmp_path / "b", embedders="dsp")
    result = cli(runner, "--store", tmp_path / "b", "import-embeddings", tmp_path / "x", "--json")
    assert result.exit_code == 0, result.output
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.parquet").write_bytes(b"not parquet")
    bad = cli(runner, "--store", tmp_path / "b", "import-embeddings", tmp_path / "junk")
    assert bad.exit_code == 1 and "is not a readable Parquet file" in bad.stderr
    empty = cli(runner, "--store", tmp_path / "b", "import-embeddings", tmp_path / "nothing")
    assert empty.exit_code == 1 and "no such folder" in empty.stderr


def test_killed_import_resumes_without_duplicates(plain, tmp_path: Path) -> None:
    api.export_embeddings(plain, tmp_path / "shards")
    other = api.init(tmp_path / "other", embedders="dsp")

    def killer(done: int, total: int, item: str) -> None:
        if done == 9:  # after the first batch of 4 committed, during the third
            raise KeyboardInterrupt

    files = bulk.shard_files(tmp_path / "shards")
    with other.write_lock(), pytest.raises(KeyboardInterrupt):
        bulk.import_shards(other, files, progress=killer, batch_tracks=4)
    assert api.info(other)["counts"]["tracks"] == 8  # two whole batches, nothing of the third
    report = api.import_embeddings(other, tmp_path / "shards")
    assert len(report.added) == 4 and len(report.skipped) == 8
    a = snapshot(plain)
    a["failures"] = []
    assert_same_store(a, snapshot(other))


# --- bulk ingest on a local Ray ---------------------------------------------------------------------


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="bulk ingest needs ray (the `ray` extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_ingest_equals_plain_add(local_ray, runner, plain, folder: Path, tmp_path: Path) -> None:
    api.init(tmp_path / "ray", embedders="dsp")
    result = cli(runner, "--store", tmp_path / "ray", "add", folder, "--ray", "local", "--shard-size", "4", "--json")
    assert result.exit_code == 1, result.output  # the silent file fails, as with plain add
    import json

    report = json.loads(result.stdout)
    assert report["shards"] == {"resumed_files": 0, "embedded_files": 14, "written": 4}
    assert len(report["added"]) == 12 and len(report["failed"]) == 1 and len(report["skipped"]) == 1
    store = api.open(tmp_path / "ray")
    assert_same_store(snapshot(plain), snapshot(store))
    assert not bulk.run_dir(store).exists()  # imported shards are removed


def test_killed_ray_ingest_resumes_without_duplicates(local_ray, plain, folder: Path, tmp_path: Path) -> None:
    store = api.init(tmp_path / "ray", embedders="dsp")

    def killer(done: int, total: int, item: str) -> None:
        raise KeyboardInterrupt  # the first shard has been written

    with pytest.raises(KeyboardInterrupt):
        api.add(store, [folder], ray="local", files_per_shard=4, progress=killer)
    local_ray.shutdown()  # the cluster goes down with the run
    local_ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    left = bulk.shard_files(bulk.run_dir(store))
    assert left and api.info(store)["counts"]["tracks"] == 0  # shards written, nothing imported yet
    report = api.add(store, [folder], ray="local", files_per_shard=4)
    resumed = report.shards["resumed_files"]
    assert resumed >= 4 and report.shards["embedded_files"] == 14 - resumed
    assert len(report.added) == 12 and len(report.failed) == 1 and len(report.skipped) == 1
    with reading(store.path) as con:
        hashes = [h for _, _, h in track_sql.embedded_tracks(con)]
    assert len(hashes) == len(set(hashes)) == 12
    assert_same_store(snapshot(plain), snapshot(store))


def _ray_processes(marker: str) -> list[int]:
    """Pids of processes whose command line or environment names ``marker`` (this test's Ray session)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the run's Ray processes through /proc")
def test_sigkilled_ray_ingest_resumes_without_duplicates(plain, folder: Path, tmp_path: Path) -> None:
    """A real `tagstore add --ray local` killed with SIGKILL (driver, raylet and workers at once) after its
    first shard: the next run imports the shards left and embeds only the rest, with no duplicate."""
    pytest.importorskip("ray", reason="bulk ingest needs ray (the `ray` extra)")
    from _faults import TAGSTORE, env

    store = api.init(tmp_path / "ray", embedders="dsp")
    shards = bulk.run_dir(store)
    marker = f"tagstore-kill-{os.getpid()}-{tmp_path.name}"
    environment = env(tmp_path, TAGSTORE_TEST_MARKER=marker, RAY_DISABLE_IMPORT_WARNING="1")
    args = [TAGSTORE, "--store", str(store.path), "add", str(folder), "--ray", "local", "--shard-size", "4",
            "--ray-cpus", "2"]  # fmt: skip
    proc = subprocess.Popen(args, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while not bulk.shard_files(shards) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # a shard takes its files' embedding time: this finds the first alone
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
        assert bulk.shard_files(shards), "no shard within 180 s"
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in _ray_processes(marker):  # Ray's daemons may have left the process group: kill them too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    left = bulk.shard_files(shards)
    assert 1 <= len(left) < 4 and api.info(store)["counts"]["tracks"] == 0  # shards written, nothing imported
    import pyarrow.parquet as pq

    in_shards = sum(pq.ParquetFile(p).metadata.num_rows for p in left)
    resumed = api.add(store, [folder], files_per_shard=4, ray="local", ray_cpus=2)
    assert resumed.shards["resumed_files"] == in_shards > 0
    assert resumed.shards["resumed_files"] + resumed.shards["embedded_files"] == 14
    assert len(resumed.added) == 12 and len(resumed.failed) == 1 and len(resumed.skipped) == 1
    with reading(store.path) as con:
        hashes = [h for _, _, h in track_sql.embedded_tracks(con)]
    assert len(hashes) == len(set(hashes)) == 12
    assert_same_store(snapshot(plain), snapshot(store))
    deadline = time.monotonic() + 30
    while _ray_processes(marker) and time.monotonic() < deadline:  # killed processes go; none is left running
        time.sleep(0.2)
    assert not _ray_processes(marker)
