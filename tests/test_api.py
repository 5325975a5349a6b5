"""tagstore.api: the one place that composes steps, usable from Python as the CLI uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_clip

from tagstore import api, ingest
from tagstore.derived import index as derived_index
from tagstore.store import Store


def test_a_python_session_end_to_end(tmp_path: Path, library: Path) -> None:
    store = api.init(tmp_path / "s", embedders="dsp")
    report = api.add(store, [library])
    assert len(report.added) == 12 and report.index_version is not None
    query, hits = api.similar(store, "1", k=3)
    assert query.track_id == 1 and len(hits) == 3 and all(h.id != 1 for h in hits)
    noise = [t.id for t in api.tracks(store, match="noise")]
    summary = api.add_tag(store, "noisy", examples=[str(i) for i in noise[:2]])
    assert summary.name == "noisy" and summary.scored == 12
    assert [t.name for t in api.tags(store, kind="learned")] == ["noisy"]
    top = api.scores(store, "noisy", top=3)
    assert len(top) == 3 and top[0].score >= top[-1].score
    assert set(api.predicted_ids(store, "noisy").tolist()) >= set(noise[:2])
    info = api.info(store)
    assert info["counts"]["tracks"] == 12 and info["index"]["current"]
    record = api.rebuild(store)
    assert record.count == 12 and api.record_dict(record)["count"] == 12
    removed = api.remove(store, [str(noise[0])])
    assert [t.id for t in removed.tracks] == [noise[0]] and api.info(store)["index"]["count"] == 11
    assert removed.refitted == ["noisy"] and api.tags(store, kind="learned")[0].n_pos == 1  # it lost an example


def test_api_add_composes_what_ingest_alone_does_not(store: Store, library: Path, tmp_path: Path) -> None:
    """ingest commits tracks and returns what changed; the index sync and rescoring are api's to do."""
    api.add(store, [library / "a"])
    api.add_tag(store, "t", examples=["1", "2"])
    new = write_clip(tmp_path / "x" / "new.wav", "noise", 2.0, seed=9)
    with store.write_lock():
        report = ingest.add(store, [new])
    assert report.changed and not derived_index.is_current(store)
    assert api.tags(store)[0].scored == 6  # not rescored by ingest
    newer = write_clip(tmp_path / "x" / "newer.wav", "tone", 2.0, seed=10)
    api.add(store, [newer])
    assert derived_index.is_current(store)
    assert api.tags(store)[0].scored == 8  # api.add scored both new tracks


def test_re_embed_rebuilds_and_refits(store: Store, library: Path) -> None:
    api.add(store, [library])
    api.add_tag(store, "t", examples=["1", "5"])
    before = api.scores(store, "t", top=None)
    record = api.rebuild(store, re_embed=True)
    after = api.scores(store, "t", top=None)
    assert record.count == 12 and [s.id for s in after] == [s.id for s in before]
    np.testing.assert_allclose([s.score for s in after], [s.score for s in before], rtol=1e-5, atol=1e-6)


def test_add_tag_with_outside_files_ingests_them_first(store: Store, library: Path, tmp_path: Path) -> None:
    api.add(store, [library / "a"])
    outside = write_clip(tmp_path / "out" / "extra.wav", "noise", 2.0, seed=3)
    summary = api.add_tag(store, "t", examples=["1", str(outside)], add_files=True)
    assert summary.scored == 7 and any(t.path == str(outside.resolve()) for t in api.tracks(store))


def test_one_handle_reads_from_many_threads_in_a_session(store: Store, library: Path) -> None:
    """A server shares one handle; a DuckDB connection runs one call at a time, so other threads get cursors."""
    import threading

    api.add(store, [library])
    expected = len(api.tracks(store))
    errors: list[BaseException] = []
    counts: list[int] = []
    start = threading.Barrier(4)

    def read() -> None:
        try:
            start.wait()
            for _ in range(20):
                with store.reader() as con:  # nested reads in one thread reuse what that thread holds
                    with store.reader() as inner:
                        assert inner is con
                    counts.append(con.execute("SELECT count(*) FROM tracks").fetchone()[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with store.session():
        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert counts == [expected] * 80


def test_a_writing_command_removes_a_killed_writers_temp_files(store: Store, library: Path) -> None:
    """A writer killed mid-write leaves `.NAME.PID.HEX.tmp` files in the derived folders; the next writing
    command (any: here `tag`) removes those whose writer is gone, and leaves a live writer's alone."""
    import os

    api.add(store, [library])
    dead = 999_999_999  # above any pid Linux hands out
    left = [store.path / folder / f".vectors-x.npy.{dead}.abcd.tmp" for folder in ("cache", "index", "lookup")]
    live = store.path / "cache" / f".vectors-y.npy.{os.getppid()}.abcd.tmp"
    for tmp in [*left, live]:
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_bytes(b"half a file")
    api.tag(store)
    assert not any(t.exists() for t in left) and live.exists()


def test_every_writing_command_completes_pending_work_first(store: Store, library: Path, tmp_path: Path) -> None:
    """Work a killed command recorded as pending (here: rescoring) is done by whichever writing command
    comes next, `update`, `import-labels` and `write` included, not only `add` or `tag`."""
    from tagstore.catalogue import pending, transaction

    api.add(store, [library])
    ids = [t.id for t in api.tracks(store)]
    api.add_tag(store, "p", examples=[str(i) for i in ids[:2]])
    labels = tmp_path / "labels.csv"
    labels.write_text(f"id,tags\n{ids[3]},q\n")
    for command in (lambda: api.update(store), lambda: api.import_labels(store, labels),
                    lambda: api.write(store, dry_run=False, tracks=[str(ids[0])])):  # fmt: skip
        with store.write_lock(), transaction(store.path) as con:
            pending.add(con, pending.RESCORE)
        command()
        with store.reader() as con:
            assert pending.tasks(con) == []
