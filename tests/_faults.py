"""Helpers of the fault suites (test_faults_*.py, test_check.py): a small seeded store, its fingerprint,
the invariants a store keeps whatever happened to it, and real `tagstore` subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import KINDS, write_clip

TAGSTORE = str(Path(sys.executable).with_name("tagstore"))


def clips(folder: Path, n: int, start: int = 0, seconds: float = 1.5) -> list[Path]:
    """``n`` distinct short clips (seeded by their number) in ``folder``."""
    return [write_clip(folder / f"clip_{i:03d}.wav", KINDS[i % 4], seconds=seconds + 0.01 * i, seed=1000 + i)
            for i in range(start, start + n)]  # fmt: skip


def build_store(root: Path, n: int = 10) -> Path:
    """A dsp store of ``n`` clips and one learned tag, ``bright`` (examples 1, 2; negative 3)."""
    from tagstore import api

    path = root / "store"
    store = api.init(path, embedders="dsp")
    api.add(store, [str(p) for p in clips(root / "base", n)])
    api.add_tag(store, "bright", examples=["1", "2"], negatives=["3"])
    store.close()
    return path


def copy_store(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with no user config or default store, one thread per process."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTORE_") or k == "TAGSTORE_WEIGHTS_DIR"}
    out.update(XDG_CONFIG_HOME=str(tmp / "config"), XDG_DATA_HOME=str(tmp / "data"), OMP_NUM_THREADS="1",
               TAGSTORE_EMBEDDERS="dsp")  # `init` without weights: the default layout needs musicnn and aisfx
    out.update(extra)
    return out


def run(args: list[str], tmp: Path, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TAGSTORE, *map(str, args)], capture_output=True, text=True, env=env(tmp),
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]  # fmt: skip


def fingerprint(path: Path) -> tuple:
    """What a failed command must not change: tracks, embeddings, tags with their examples and scores, generation."""
    from tagstore import catalogue as cat

    with cat.reading(path) as con:
        rows = [
            con.execute("SELECT id, path, content_hash FROM tracks ORDER BY id").fetchall(),
            con.execute("SELECT track_id, md5(vector::VARCHAR) FROM embeddings ORDER BY track_id").fetchall(),
            con.execute("SELECT name, kind, n_pos, n_neg, threshold FROM tags ORDER BY name").fetchall(),
            con.execute("SELECT tag_id, track_id, label FROM tag_examples ORDER BY ALL").fetchall(),
            con.execute("SELECT tag_id, count(*), round(sum(score), 4) FROM tag_scores GROUP BY tag_id ORDER BY ALL").fetchall(),
            cat.generation(con),
        ]
    return tuple(map(repr, rows))


def assert_consistent(path: Path) -> dict[str, int]:
    """Invariants that hold at any moment, even right after a kill: the store opens; tracks and embeddings pair
    up; no path or content twice; scores and examples point at stored tracks. Returns the counts."""
    from tagstore import api
    from tagstore import catalogue as cat

    store = api.open(path)
    store.close()
    with cat.reading(path) as con:
        counts = cat.counts(con)
        assert counts["tracks"] == counts["embeddings"], counts
        dup = con.execute("SELECT count(*) - count(DISTINCT path), count(*) - count(DISTINCT content_hash) FROM tracks").fetchone()
        assert dup == (0, 0), dup
        orphans = con.execute(
            "SELECT (SELECT count(*) FROM tag_scores WHERE track_id NOT IN (SELECT id FROM tracks)) + "
            "(SELECT count(*) FROM tag_examples WHERE track_id NOT IN (SELECT id FROM tracks))"
        ).fetchone()[0]
        assert orphans == 0
    return counts


def assert_complete(path: Path) -> None:
    """After a writing command has finished: every learned tag scored for every track, nothing pending, the
    index verifies in full and `query similar` equals an exact cosine search over the catalogue."""
    from tagstore import api
    from tagstore import catalogue as cat
    from tagstore.catalogue import tags as tag_sql
    from tagstore.check import inspect
    from tagstore.derived.index import index_vectors, open_index

    assert_consistent(path)
    report = inspect(path)
    assert report.healthy or report.kinds() <= {"index-behind", "index-missing"}, report.problems
    with cat.reading(path) as con:
        learned = [tid for tid, _, _ in tag_sql.learned_models(con)]
        assert not learned or len(tag_sql.missing_scores(con, learned)) == 0
        ids = con.execute("SELECT id FROM tracks ORDER BY id").fetchnumpy()["id"].astype(np.int64)
    if len(ids) < 2:
        return
    store = api.open(path)
    with store.session():
        _, hits = api.similar(store, str(int(ids[0])), k=len(ids) - 1)
        index, record = open_index(store)
        vecs = index_vectors(store, store.embeddings(ids.tolist()), record)
    store.close()
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = unit[1:] @ unit[0]
    order = np.argsort(-exact, kind="stable")
    assert [h.id for h in hits] == ids[1:][order].tolist() or np.allclose([h.score for h in hits], exact[order], atol=1e-5)
    assert inspect(path).healthy, inspect(path).problems
