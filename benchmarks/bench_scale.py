"""A store at scale: the index ``auto`` picks beside exact FAISS Flat on the same vectors, in one run.

    python benchmarks/bench_scale.py --sizes 100000,1000000 --dim 1408 [--tags 50 --new 10000]

Per size: a store of seeded synthetic clustered vectors (a 256-centre Gaussian mixture, the shape of
audio embeddings; the issue allows synthetic vectors), written straight into DuckDB. Then, per index
(``Flat`` first, as the reference, then ``auto``): ``tagstore rebuild --index SPEC`` as a child process
(wall s and its peak RSS from ``wait4``), the index file's MB, recall@10 against the Flat results on 200
seeded stored tracks as queries (their own id left out, as ``query similar ID`` does), and in-process
``query similar`` throughput (one session, one loaded index), the cold CLI `query similar ID` (process
start to exit, median of 5 ids; through the id lookup) and a `tagstore serve` under ``--clients`` keep-alive
clients for ``--seconds`` (p50 / p99 ms of `/api/similar`, as benchmarks/bench_serve.py). With ``auto`` active: the refresh of the
vector copy, ``add-tag`` (20 examples, ensemble, CV, score every track, persist; first and warm), the
store folder against the raw vectors, and ``tag`` for ``--new`` new tracks x ``--tags`` tags.
``--storage N`` first compares DuckDB BLOB and FLOAT[dim] columns for N rows (file MB, full read s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import cli_times, load, pct, start_server  # noqa: E402

from tagstore import api  # noqa: E402
from tagstore import catalogue as cat  # noqa: E402
from tagstore.derived import index as derived_index  # noqa: E402
from tagstore.derived.matrix import matrix  # noqa: E402
from tagstore.layout import Block, Layout  # noqa: E402
from tagstore.store import Store  # noqa: E402

CHUNK = 20_000
K = 10


def mixture(n: int, dim: int, seed: int) -> np.ndarray:
    centres = np.random.default_rng(12345).standard_normal((256, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, 256, n)] + 0.8 * rng.standard_normal((n, dim), dtype=np.float32)


def append(path: Path, digest: str, first: int, n: int, dim: int, seed: int) -> None:
    """``n`` tracks with mixture vectors, ids from ``first``, one transaction per chunk (a single one would
    hold every uncommitted row in memory), the generation moved once at the end."""
    for start in range(0, n, CHUNK):
        with cat.transaction(path) as con:
            m = min(CHUNK, n - start)
            ids = np.arange(first + start, first + start + m, dtype=np.int64)
            blobs = np.empty(m, dtype=object)
            blobs[:] = [v.tobytes() for v in mixture(m, dim, seed * 1_000_003 + start)]
            con.register("part", {"id": ids, "v": blobs})
            con.execute(
                """INSERT INTO tracks (id, path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate,
                       channels, title, artist)
                   SELECT id, '/music/t' || id || '.flac', 'sha256:' || id, 0, 0, 180.0, 44100, 2,
                          'Title ' || id, 'Artist ' || (id % 500) FROM part"""
            )
            con.execute("INSERT INTO embeddings SELECT id, ?, v::BLOB FROM part", [digest])
            con.unregister("part")
    with cat.transaction(path) as con:
        cat.bump_generation(con)


def make_store(path: Path, n: int, dim: int) -> Store:
    Store.init(path, embedders="dsp", factory="Flat")
    layout = Layout((Block("synthetic", "1", dim, 16000, 1.0, 1.0, {}),))
    with cat.transaction(path) as con:
        cat.set_meta(con, "layout", layout.to_json())
    append(path, layout.digest, 1, n, dim, seed=0)
    store = Store.open(path)
    store.close()
    return store


def child_rebuild(store: Store, spec: str) -> tuple[float, float]:
    """``tagstore rebuild --index SPEC`` in a child process: (wall s, peak RSS GB)."""
    exe = Path(sys.executable).with_name("tagstore")
    env = {**os.environ, "TAGSTORE_STORE": str(store.path)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "-q", "rebuild", "--index", spec, "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"rebuild --index {spec} failed with status {proc.returncode}")
    json.loads(out)
    return wall, usage.ru_maxrss / 1e6  # KB -> GB


def neighbours(store: Store, qids: np.ndarray) -> np.ndarray:
    """Top-K ids of each stored query track from the active index, its own id left out (batched)."""
    index, record = derived_index.open_index(store)
    vec = derived_index.index_vectors(store, store.embeddings(qids.tolist()), record)
    _, found = index.search(vec, K + 1)
    return np.stack([row[row != q][:K] for row, q in zip(found, qids)])


def qps(store: Store, qids: np.ndarray) -> float:
    with store.session():
        api.similar(store, str(int(qids[0])), k=K)
        t0 = time.perf_counter()
        for q in qids:
            api.similar(store, str(int(q)), k=K)
        return len(qids) / (time.perf_counter() - t0)


def folder_gb(path: Path) -> dict[str, float]:
    parts = {"catalogue": path / cat.CATALOGUE_FILE, "index": path / cat.INDEX_DIR, "cache": path / cat.CACHE_DIR}
    out = {}
    for name, p in parts.items():
        files = [p] if p.is_file() else list(p.glob("*")) if p.exists() else []
        out[name] = sum(f.stat().st_size for f in files) / 1e9
    return out


def bench_size(n: int, dim: int, work: Path, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    store = make_store(work / f"s{n}", n, dim)
    print(f"[{n:,} x {dim}: filled in {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    rng = np.random.default_rng(2)
    qids = np.sort(rng.choice(np.arange(1, n + 1), args.queries, replace=False))
    truth = None
    rows = []
    for spec in ("Flat", "auto"):
        wall, rss = child_rebuild(store, spec)
        store = Store.open(store.path)
        store.close()
        info = api.info(store)["index"]
        found = neighbours(store, qids)
        if truth is None:
            truth = found
        recall = float(np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth)]))
        timed = qids[: args.flat_queries] if spec == "Flat" else qids
        q = qps(store, timed)
        api.refresh_lookup(store)  # as `rebuild` from the CLI leaves it
        cli_times(store.path, [int(qids[0])])  # one warm-up (page cache)
        cold = statistics.median(cli_times(store.path, [int(i) for i in qids[1:6]])[0])
        proc, host, port = start_server(store.path)
        try:
            lat, unanswered = load(host, port, n, args.clients, args.seconds)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        server = f"{pct(lat, 50):.0f} / {pct(lat, 99):.0f} ({len(lat) / args.seconds:.0f} q/s" + (
            f", {unanswered} unanswered)" if unanswered else ")")
        rows.append((spec, info["factory"], wall, rss, info["size_bytes"] / 1e6, recall, q,
                     info.get("nprobe"), info.get("recall_at_10"), cold, server))  # fmt: skip
        print(f"[{spec}: {info['factory']} built in {wall:.0f} s]", file=sys.stderr, flush=True)
    print(f"\n**{n:,} tracks x {dim}-d**\n")
    print("| index | factory | build s | peak RSS GB | index MB | recall@10 vs Flat | in-process q/s | nprobe (tuned) "
          f"| recall@10 recorded | CLI cold s | server p50/p99 ms, {args.clients} clients |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for spec, fac, wall, rss, mb, rec, q, nprobe, recorded, cold, server in rows:
        print(f"| {spec} | {fac} | {wall:.1f} | {rss:.2f} | {mb:,.0f} | {rec:.3f} | {q:.1f} | {nprobe or '-'} | "
              f"{recorded if recorded is not None else 'exact'} | {cold:.3f} | {server} |", flush=True)  # fmt: skip
    # tags, with the auto index active; each row printed as soon as it is measured
    print("\n| step | s | target |\n|---|---:|---|", flush=True)
    with store.write_lock():
        t0 = time.perf_counter()
        matrix(store)
        refresh = time.perf_counter() - t0
    print(f"| refresh the vector copy ({n:,} x {dim}, bfloat16 from 1 GiB of float32) | {refresh:.1f} | once per change of the catalogue |",
          flush=True)  # fmt: skip
    times = []
    for r in range(args.repeats):
        examples = [str(i) for i in rng.choice(np.arange(1, n + 1), 20, replace=False)]
        t0 = time.perf_counter()
        api.add_tag(store, f"bench-{r}", examples, method="ensemble")
        times.append(time.perf_counter() - t0)
    print(f"| `add-tag` 20 examples, warm, median of {args.repeats} (min) | {statistics.median(times):.2f} "
          f"({min(times):.2f}) | < 2 s |", flush=True)  # fmt: skip
    raw = n * dim * 4 / 1e9
    store_table = ["", "| store folder | catalogue GB | index GB | vector copy GB | total GB | raw vectors GB | total / raw |",
                   "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip

    def size_row(label: str) -> str:
        s = folder_gb(store.path)
        total = sum(s.values())
        return (f"| {label} | {s['catalogue']:.2f} | {s['index']:.2f} | {s['cache']:.2f} | {total:.2f} | {raw:.2f} | "
                f"{total / raw:.2f} |")  # fmt: skip

    store_table.append(size_row(f"{n:,} tracks, {args.repeats} tags"))
    print("\n".join(store_table[:2] + store_table[2:]), file=sys.stderr, flush=True)
    for t in range(args.repeats, args.tags):
        api.add_tag(store, f"bench-{t}", [str(i) for i in rng.choice(np.arange(1, n + 1), 20, replace=False)],
                    method="ensemble")  # fmt: skip
    append(store.path, store.layout.digest, n + 1, args.new, dim, seed=9)
    with store.write_lock():
        t0 = time.perf_counter()
        derived_index.sync(store)
        sync_s = time.perf_counter() - t0
    print(f"| index sync after {args.new:,} new tracks | {sync_s:.2f} | |", flush=True)
    t0 = time.perf_counter()
    result = api.tag(store)
    tag_s = time.perf_counter() - t0
    assert result["tracks"] == args.new and result["tags"] == args.tags, result
    print(f"| `tag` {args.new:,} new tracks x {args.tags} tags | {tag_s:.2f} | < 2 s |", flush=True)
    store_table.append(size_row(f"+{args.new:,} tracks, {args.tags} tags"))
    print("\n".join(store_table), flush=True)
    shutil.rmtree(store.path)


def bench_storage(n: int, dim: int, work: Path) -> None:
    """BLOB vs FLOAT[dim] in DuckDB: file size and one full read into an (n, dim) float32 array."""
    import duckdb

    x = mixture(n, dim, seed=3)
    rows = []
    for kind in ("BLOB", f"FLOAT[{dim}]"):
        path = work / f"storage-{len(rows)}.duckdb"
        con = duckdb.connect(str(path))
        con.execute(f"CREATE TABLE e (id BIGINT PRIMARY KEY, v {kind})")
        for start in range(0, n, CHUNK):
            part = x[start : start + CHUNK]
            values = np.empty(len(part), dtype=object)
            values[:] = [v.tobytes() for v in part] if kind == "BLOB" else list(part)
            con.register("part", {"id": np.arange(start, start + len(part)), "v": values})
            con.execute(f"INSERT INTO e SELECT id, v::{kind} FROM part")
            con.unregister("part")
        con.execute("CHECKPOINT")
        con.close()
        con = duckdb.connect(str(path), read_only=True)
        t0 = time.perf_counter()
        cur = con.execute("SELECT id, v FROM e")
        parts = []
        while batch := cur.fetchmany(8192):
            if kind == "BLOB":
                parts.append(np.frombuffer(b"".join(r[1] for r in batch), np.float32).reshape(len(batch), dim))
            else:
                parts.append(np.asarray([r[1] for r in batch], dtype=np.float32))
        got = np.concatenate(parts)
        read_s = time.perf_counter() - t0
        con.close()
        assert got.shape == (n, dim)
        rows.append((kind, path.stat().st_size / 1e6, read_s))
    print(f"\n**DuckDB embedding column, {n:,} x {dim}-d (raw float32 {n * dim * 4 / 1e6:,.0f} MB)**\n")
    print("| column | file MB | full read s |")
    print("|---|---:|---:|")
    for kind, mb, s in rows:
        print(f"| {kind} | {mb:,.0f} | {s:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=1408)
    ap.add_argument("--queries", type=int, default=200, help="stored tracks used as queries (recall, q/s)")
    ap.add_argument("--flat-queries", type=int, default=20, help="of those, timed on Flat (slow at 1M)")
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients of the server")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the clients ask")
    ap.add_argument("--storage", type=int, default=0, help="rows for the BLOB vs FLOAT[dim] comparison (0: skip)")
    ap.add_argument("--workdir", default=None, help="folder for the stores (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.storage:
            bench_storage(args.storage, args.dim, Path(tmp))
        for n in [int(s) for s in args.sizes.split(",")]:
            bench_size(n, args.dim, Path(tmp), args)


if __name__ == "__main__":
    main()
