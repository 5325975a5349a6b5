"""The id lookup: `query similar ID` answered from the index and a stamped sidecar, without DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tagstore import api
from tagstore import catalogue as cat
from tagstore.derived import lookup


@pytest.fixture
def filled(tmp_path: Path, library: Path):  # type: ignore[no-untyped-def]
    store = api.init(tmp_path / "store", embedders="dsp")
    assert len(api.add(store, [library]).added) == 12
    return store


def _same(quick: dict, store, track_id: int, k: int) -> None:  # type: ignore[no-untyped-def]
    q, hits = api.similar(store, str(track_id), k=k)
    assert quick["query"] == {"text": str(track_id), "id": track_id, "path": q.path}
    assert [h["id"] for h in quick["results"]] == [h.id for h in hits]
    assert [h["score"] for h in quick["results"]] == pytest.approx([h.score for h in hits], abs=1e-5)
    assert [{k: v for k, v in h.items() if k != "score"} for h in quick["results"]] == [
        {k: v for k, v in h.to_dict().items() if k != "score"} for h in hits
    ]


def test_answers_as_the_catalogue_does(filled) -> None:  # type: ignore[no-untyped-def]
    for tid in (1, 6, 12):
        quick = lookup.similar_by_id(filled.path, tid, k=4)
        assert quick is not None
        _same(quick, filled, tid, 4)
    assert len(lookup.similar_by_id(filled.path, 3, k=50)["results"]) == 11  # every other track
    assert lookup.similar_by_id(filled.path, 999, k=3) is None  # unknown: the catalogue path says so


def test_stale_stamp_is_not_trusted(filled, library: Path) -> None:  # type: ignore[no-untyped-def]
    with cat.transaction(filled.path) as con:  # a commit by a writer that did not stamp
        cat.set_meta(con, "note", "x")
    assert lookup.similar_by_id(filled.path, 1, k=3) is None
    assert api.refresh_lookup(filled)
    assert lookup.similar_by_id(filled.path, 1, k=3) is not None

    api.remove(filled, ["2"])  # writes stamp themselves, with the new generation's files
    quick = lookup.similar_by_id(filled.path, 1, k=20)
    assert 2 not in [h["id"] for h in quick["results"]] and len(quick["results"]) == 10
    _same(lookup.similar_by_id(filled.path, 1, k=5), filled, 1, 5)
    assert sorted(p.name for p in (filled.path / lookup.LOOKUP_DIR).iterdir())[-1] == lookup.STAMP_FILE
    assert len(list((filled.path / lookup.LOOKUP_DIR).iterdir())) == 4  # old files removed

    with cat.WriteLock(filled.path):
        assert not api.refresh_lookup(filled)  # another writer: skipped, nothing changed


def test_damaged_files_fall_back(filled) -> None:  # type: ignore[no-untyped-def]
    stamp = json.loads((filled.path / lookup.LOOKUP_DIR / lookup.STAMP_FILE).read_text())
    meta = filled.path / lookup.LOOKUP_DIR / stamp["lookup"]["meta"]
    meta.write_bytes(meta.read_bytes()[:-3])
    assert lookup.similar_by_id(filled.path, 1, k=3) is None
    api.refresh_lookup(filled)  # the record no longer matches the file: rewritten
    assert lookup.similar_by_id(filled.path, 1, k=3) is not None
    index = filled.path / cat.INDEX_DIR / stamp["index"]["file"]
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: the checksum no longer matches the record
    index.write_bytes(bytes(data))
    assert lookup.similar_by_id(filled.path, 1, k=3) is None


def test_only_exact_factories() -> None:
    for name in ("Flat", "HNSW32", "HNSW16,Flat", "IVF256,Flat", "IVF1024_HNSW32,Flat"):
        assert lookup.EXACT.fullmatch(name), name
    for name in ("IVF256,SQ8", "IVF1024_HNSW32,PQ64", "HNSW32,SQ8", "PQ32", "SQ8"):
        assert not lookup.EXACT.fullmatch(name), name


def test_cli_query_by_id_skips_duckdb_and_torch(filled) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys\nsys.argv = ['tagstore', 'query', 'similar', '4', '-k', '3', '--json']\n"
        "from tagstore.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED:' + ','.join(m for m in ('torch', 'duckdb', 'faiss') if m in sys.modules), file=sys.stderr)\n"
    )
    env = {**os.environ, "TAGSTORE_STORE": str(filled.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "LOADED:faiss"
    _same(json.loads(proc.stdout), filled, 4, 3)
