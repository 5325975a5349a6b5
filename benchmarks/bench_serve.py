"""`query similar ID` from a cold process (the id lookup, no server) and through `tagstore serve`.

    python benchmarks/bench_serve.py --sizes 100000 --dim 512 --clients 50 --seconds 30

Per size: a synthetic store (seeded random vectors, as bench_store.py), Flat index; then
- cold CLI: `tagstore query similar ID -k 10 --json` as a subprocess, process start to exit, 7 random
  ids after one warm-up, wall and CPU (user + sys) seconds: through the id lookup (no DuckDB), and with
  the lookup switched off in the child process (every query opens the catalogue, as before it);
- the same through a running server (`tagstore serve --port 0` on 127.0.0.1);
- server latency (keep-alive HTTP, answered requests only; those not answered in 60 s are counted):
  1 client sequentially, then ``--clients`` threads each with its own keep-alive HTTP
  connection asking `/api/similar?track=ID&k=10` for ``--seconds`` (loopback only): p50 / p99 ms, queries/s.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_store import synthetic_store  # noqa: E402

from tagstore import api  # noqa: E402
from tagstore.server import read_address  # noqa: E402


CATALOGUE_PATH = (
    "import sys\n"
    "from tagstore import api\n"
    "from tagstore.derived import lookup\n"
    "lookup.similar_by_id = lambda *a, **kw: None  # as before the lookup: every query opens the catalogue\n"
    "api.refresh_lookup = lambda store: False\n"
    "from tagstore.cli.main import main\n"
    "sys.argv[0] = 'tagstore'\n"
    "main()\n"
)


def cli_times(store: Path, ids: list[int], catalogue: bool = False) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + sys) seconds of `tagstore query similar ID -k 10 --json`, process start to exit."""
    exe = Path(sys.executable).with_name("tagstore")
    env = {**os.environ, "TAGSTORE_STORE": str(store)}
    walls, cpus = [], []
    for qid in ids:
        argv = ["query", "similar", str(qid), "-k", "10", "--json"]
        cmd = [sys.executable, "-c", CATALOGUE_PATH, *argv] if catalogue else [str(exe), *argv]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert len(json.loads(out.stdout)["results"]) == 10
    return walls, cpus


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    env = {**os.environ, "TAGSTORE_STORE": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "tagstore.cli.main", "serve", "--port", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while (addr := read_address(store)) is None or addr.pid != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return proc, addr.connect_host, addr.port


def load(host: str, port: int, n: int, clients: int, seconds: float, timeout_s: float = 60.0) -> tuple[list[float], int]:
    """Latencies (s) of every query answered by ``clients`` threads in ``seconds``, and how many requests
    were not answered within ``timeout_s`` (counted, not in the latencies; that client stops)."""
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        mine = []
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                conn.request("GET", f"/api/similar?track={int(rng.integers(1, n + 1))}&k=10")
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, body[:200]
                mine.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            with lock:
                failed[0] += 1
        finally:
            conn.close()
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, failed[0]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workdir", default=None, help="keep the stores in this folder and reuse them (default: a temporary one)")
    args = ap.parse_args()
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        for n in [int(s) for s in args.sizes.split(",")]:
            path = Path(tmp) / f"s{n}x{args.dim}"
            t0 = time.perf_counter()
            if not (path / "catalogue.duckdb").exists():
                api.rebuild(synthetic_store(path, n, args.dim))
            build = time.perf_counter() - t0
            rng = np.random.default_rng(1)
            ids = [int(i) for i in rng.integers(1, n + 1, 7)]
            cli_times(path, [1])  # warm the page cache
            old_wall, old_cpu = cli_times(path, ids, catalogue=True)
            cold_wall, cold_cpu = cli_times(path, ids)
            proc, host, port = start_server(path)
            try:
                via_wall, via_cpu = cli_times(path, ids)
                seq, _ = load(host, port, n, 1, min(5.0, args.seconds))
                par, unanswered = load(host, port, n, args.clients, args.seconds)
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
            med = statistics.median
            rows.append((n, args.dim, build, med(old_wall), med(old_cpu), med(cold_wall), max(cold_wall), med(cold_cpu),
                         med(via_wall), med(via_cpu), pct(seq, 50), pct(par, 50), pct(par, 99), len(par) / args.seconds,
                         os.getloadavg()[0], unanswered))  # fmt: skip
            print(f"done {n}", file=sys.stderr, flush=True)
    print("| tracks | dim | store + rebuild s | catalogue path: wall s / CPU s | id lookup: wall s (max) / CPU s "
          f"| via server: wall s / CPU s | server 1 client p50 ms | {args.clients} clients p50 / p99 ms | queries/s "
          "| unanswered in 60 s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]:,} | {r[1]} | {r[2]:.1f} | {r[3]:.3f} / {r[4]:.3f} | {r[5]:.3f} ({r[6]:.3f}) / {r[7]:.3f} | "
              f"{r[8]:.3f} / {r[9]:.3f} | {r[10]:.1f} | {r[11]:.0f} / {r[12]:.0f} | {r[13]:.1f} | {r[15]} | {r[14]:.1f} |")


if __name__ == "__main__":
    main()
