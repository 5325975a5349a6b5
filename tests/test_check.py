"""`tagstore check [--repair]`, `tagstore backup`, and the post-commit work a kill leaves pending."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from _faults import assert_complete, build_store, clips, copy_store
from tagstore import api
from tagstore import catalogue as cat
from tagstore.check import inspect


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("check"))


@pytest.fixture
def store_path(base: Path, tmp_path: Path) -> Path:
    path = copy_store(base, tmp_path / "s")
    api.similar(api.open(path), "1", k=3)  # an index and a vector cache on disk
    return path


def _sql(path: Path, statement: str) -> None:
    con = duckdb.connect(str(cat.catalogue_path(path)))
    con.execute(statement)
    con.close()


def _active_index(path: Path) -> Path:
    with cat.reading(path) as con:
        from tagstore.catalogue import records

        return path / cat.INDEX_DIR / records.active_index(con).file


def test_a_healthy_store_is_healthy(store_path: Path) -> None:
    report = inspect(store_path)
    assert report.healthy, report.problems
    assert report.counts["tracks"] == 10


def _flip_index(path: Path) -> None:
    f = _active_index(path)
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime kept: only the full checksum sees it


FAULTS = {
    "deleted index folder": (lambda p: __import__("shutil").rmtree(p / "index"), "index-missing"),
    "flipped index bytes": (_flip_index, "index-corrupt"),
    "missing scores": (lambda p: _sql(p, "DELETE FROM tag_scores WHERE track_id IN (4, 5)"), "missing-scores"),
    "orphan scores": (lambda p: _sql(p, "INSERT INTO tag_scores VALUES (1, 999, 0.5, false)"), "orphan-rows"),
    "orphan embedding": (lambda p: _sql(p, "INSERT INTO embeddings SELECT 998, layout_digest, vector FROM embeddings "
                                           "WHERE track_id = 1"), "orphan-rows"),  # fmt: skip
    "pending rescore": (lambda p: _sql(p, "INSERT INTO pending_work (task) VALUES ('rescore')"), "pending-work"),
    "nan embedding": (lambda p: _sql(p, "UPDATE embeddings SET vector = vector[1:-5] || '\\x00\\x00\\xC0\\x7F'::BLOB "
                                        "WHERE track_id = 6"), "bad-embedding"),  # fmt: skip
    "one-byte embedding": (lambda p: _sql(p, "UPDATE embeddings SET vector = '\\x01'::BLOB WHERE track_id = 7"),
                           "bad-embedding"),  # fmt: skip
    "generation edited": (lambda p: _sql(p, "UPDATE meta SET value = 'x' WHERE key = 'generation'"), "catalogue-values"),
    "stale temp": (lambda p: (p / "index" / ".index-x.faiss.999999999.abcd.tmp").write_bytes(b"x"), "stale-temp"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_is_named_and_repaired(store_path: Path, name: str) -> None:
    damage, kind = FAULTS[name]
    damage(store_path)
    report = inspect(store_path)
    assert kind in report.kinds(), report.problems
    assert all(p.fixable for p in report.problems if p.kind == kind)
    fixed = api.check(store_path, repair=True)
    assert fixed.healthy, fixed.problems
    assert fixed.repaired
    assert_complete(store_path)


@pytest.mark.parametrize("size", [0, 8, 200_000])
def test_a_truncated_catalogue_is_named_corrupt_with_advice(store_path: Path, size: int) -> None:
    os.truncate(cat.catalogue_path(store_path), size)
    report = api.check(store_path, repair=True)
    assert report.kinds() == {"catalogue-corrupt"}
    (problem,) = report.problems
    assert not problem.fixable and "backup" in problem.message and "\n" not in problem.message


def test_flipped_catalogue_bytes_show_duckdbs_reason(store_path: Path) -> None:
    with open(cat.catalogue_path(store_path), "r+b") as fh:
        fh.seek(12388)
        fh.write(b"\xaa" * 64)
    (problem,) = inspect(store_path).problems
    assert problem.kind == "catalogue-corrupt" and "checksum" in problem.message, problem.message


def test_a_dropped_table_is_named(store_path: Path) -> None:
    _sql(store_path, "DROP TABLE tag_suggestions")
    report = inspect(store_path)
    assert report.kinds() == {"catalogue-schema"} and "tag_suggestions" in report.problems[0].message


def test_backup_is_a_store_that_checks_healthy(store_path: Path, tmp_path: Path) -> None:
    store = api.open(store_path)
    done = api.backup(store, tmp_path / "copy")
    assert done["counts"]["tracks"] == 10
    assert inspect(tmp_path / "copy").healthy
    copy = api.open(tmp_path / "copy")
    assert [h.id for h in api.similar(copy, "1", k=5)[1]] == [h.id for h in api.similar(store, "1", k=5)[1]]
    with pytest.raises(Exception, match="not an empty folder"):
        api.backup(store, tmp_path / "copy")


def test_a_kill_after_the_commit_leaves_no_tag_unscored(store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign's crash-safety bug: killed after the last batch committed, before rescoring; the next
    `add` (which skips every file) completes the scores."""
    from tagstore.tags import fitting

    new = clips(tmp_path / "new", 5, start=200)
    store = api.open(store_path)

    def killed(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt  # stands for SIGKILL: nothing after the commit runs

    monkeypatch.setattr(fitting, "rescore", killed)
    with pytest.raises(KeyboardInterrupt):
        api.add(store, [str(p) for p in new])
    monkeypatch.undo()
    assert "pending-work" in inspect(store_path).kinds() and "missing-scores" in inspect(store_path).kinds()
    report = api.add(api.open(store_path), [str(p) for p in new])
    assert len(report.skipped) == 5 and not report.added
    (tag,) = api.tags(api.open(store_path), kind="learned")
    assert tag.scored == 15
    assert_complete(store_path)


def test_any_writing_command_completes_pending_work(store_path: Path) -> None:
    _sql(store_path, "DELETE FROM tag_scores WHERE track_id = 4")
    _sql(store_path, "INSERT INTO pending_work (task) VALUES ('rescore')")
    api.propagate(api.open(store_path), "bright", k=2)
    assert inspect(store_path).healthy
