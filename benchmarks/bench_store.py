"""Store-level benchmarks for the foundation: ingest, `query similar` and rebuild.

    python benchmarks/bench_store.py --sizes 10000,100000 --dim 512 --clips 24

Ingest embeds real (synthesised, seeded) audio files through the whole pipeline (decode, resample,
dsp embedder, DuckDB batches, index sync). Search and rebuild use synthetic seeded vectors written
straight into a store's catalogue under a synthetic ``dim``-d layout, as the issue allows.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tagstore import api
from tagstore import catalogue as cat
from tagstore.layout import Block, Layout
from tagstore.store import Store


def synth_clip(seconds: float, sr: int, seed: int) -> np.ndarray:
    """A seeded music-like clip: a chord progression with a beat and some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    root = 110 * 2 ** (rng.integers(0, 24) / 12)
    x = np.zeros_like(t)
    for k in range(int(seconds // 2) + 1):
        seg = (t >= 2 * k) & (t < 2 * k + 2)
        f = root * 2 ** (rng.choice([0, 3, 4, 5, 7]) / 12)
        for ratio in (1.0, 1.25, 1.5):
            x[seg] += np.sin(2 * np.pi * f * ratio * t[seg]) / 3
    beat = 60 / rng.uniform(80, 160)
    env = np.exp(-((t % beat) / 0.03))
    x += 0.4 * env * rng.standard_normal(t.shape[0])
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def bench_ingest(n_clips: int, seconds: float, workdir: Path) -> dict[str, float]:
    music = workdir / "music"
    music.mkdir()
    for i in range(n_clips):
        sf.write(str(music / f"clip{i:04d}.flac"), synth_clip(seconds, 44100, i), 44100)
    store = Store.init(workdir / "ingest-store", embedders="dsp")
    t0 = time.perf_counter()
    report = api.add(store, [music])
    wall = time.perf_counter() - t0
    assert len(report.added) == n_clips, report.failed
    return {"clips": n_clips, "audio_s": report.audio_seconds, "wall_s": wall}


def synthetic_store(path: Path, n: int, dim: int, seed: int = 0) -> Store:
    """A store of ``n`` tracks with seeded random ``dim``-d embeddings under a synthetic layout."""
    store = Store.init(path, embedders="dsp")
    layout = Layout((Block("synthetic", "1", dim, 16000, 1.0, 1.0, {}),))
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    blobs = np.empty(n, dtype=object)
    chunk = 20000
    with cat.transaction(path) as con:
        cat.set_meta(con, "layout", layout.to_json())
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            vecs = rng.standard_normal((sl.stop - sl.start, dim), dtype=np.float32)
            blobs = np.empty(sl.stop - sl.start, dtype=object)
            blobs[:] = [v.tobytes() for v in vecs]
            part = {"id": ids[sl], "v": blobs}
            con.register("part", part)
            con.execute(
                """INSERT INTO tracks (id, path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate,
                       channels, title, artist)
                   SELECT id, '/music/track' || id || '.flac', 'sha256:' || id, 0, 0, 180.0, 44100, 2,
                          'Title ' || id, 'Artist ' || (id % 500) FROM part"""
            )
            con.execute("INSERT INTO embeddings SELECT id, ?, v::BLOB FROM part", [layout.digest])
            con.unregister("part")
        cat.bump_generation(con)
    return Store.open(path)


def cli_query_times(store: Store, ids: list[int], k: int) -> list[float]:
    exe = Path(sys.executable).with_name("tagstore")
    env = {**os.environ, "TAGSTORE_STORE": str(store.path)}
    times = []
    for qid in ids:
        t0 = time.perf_counter()
        out = subprocess.run([str(exe), "query", "similar", str(qid), "-k", str(k), "--json"],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        times.append(time.perf_counter() - t0)
        assert len(json.loads(out.stdout)["results"]) == k
    return times


def bench_search(n: int, dim: int, workdir: Path, queries: int) -> dict[str, float]:
    t0 = time.perf_counter()
    store = synthetic_store(workdir / f"s{n}", n, dim)
    fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    api.rebuild(store)
    rebuild = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    cli_query_times(store, [1], 10)  # warm the page cache
    cli = cli_query_times(store, [int(i) for i in rng.integers(1, n + 1, 7)], 10)
    qids = [int(i) for i in rng.integers(1, n + 1, queries)]
    with store.session():  # one catalogue connection and one loaded index for the whole loop
        api.similar(store, qids[0], k=10)
        t0 = time.perf_counter()
        for qid in qids:
            api.similar(store, qid, k=10)
        inproc = queries / (time.perf_counter() - t0)
    size = api.info(store)["index"]["size_bytes"]
    return {"n": n, "dim": dim, "fill_s": fill, "rebuild_s": rebuild, "cli_median_s": statistics.median(cli),
            "cli_max_s": max(cli), "inproc_qps": inproc, "index_mb": size / 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clips", type=int, default=24, help="clips for the ingest benchmark (0 to skip)")
    ap.add_argument("--clip-seconds", type=float, default=30.0)
    ap.add_argument("--queries", type=int, default=50, help="in-process queries timed per size")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.clips:
            r = bench_ingest(args.clips, args.clip_seconds, work)
            print("| ingest (dsp) | clips | audio s | wall s | clips/s | x real time |")
            print("|---|---|---|---|---|---|")
            print(f"| 44.1 kHz FLAC, {args.clip_seconds:.0f} s each | {r['clips']} | {r['audio_s']:.0f} | "
                  f"{r['wall_s']:.2f} | {r['clips'] / r['wall_s']:.2f} | {r['audio_s'] / r['wall_s']:.0f} |")  # fmt: skip
            print()
        print("| tracks | dim | rebuild s | index MB | `query similar` CLI median s | CLI max s | in-process queries/s |")
        print("|---|---|---|---|---|---|---|")
        for n in [int(s) for s in args.sizes.split(",")]:
            r = bench_search(n, args.dim, work, args.queries)
            print(f"| {r['n']:,} | {r['dim']} | {r['rebuild_s']:.2f} | {r['index_mb']:.0f} | {r['cli_median_s']:.3f} | "
                  f"{r['cli_max_s']:.3f} | {r['inproc_qps']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
