"""Benchmark the vector index: build, save, load, search latency and throughput, recall@10.

    python benchmarks/bench_index.py --sizes 10000,100000 --dim 512 --queries 1000 --factory Flat --factory HNSW32

Data: seeded synthetic "embeddings", a mixture of 256 Gaussian clusters (closer to audio embeddings
than isotropic noise, which is the worst case for graph indexes); queries are held-out draws from the
same mixture. Prints a markdown table on stdout (progress on stderr):

* build s: :func:`tagstore.indexes.build` from 10k-vector chunks; save s: atomic save incl. SHA-256.
* load s: :func:`load` with the saved record (stat fingerprint trusted), mmap + prefetch, file cached.
* cold 1q ms: load + first query after evicting the file from the page cache (posix_fadvise).
* 1-query ms: median of single-query searches; q/s: one batched search of all queries, k=10.
* recall@10: against exact inner-product search (1.0 for Flat by construction).
* process s: a fresh ``python -c`` that imports tagstore.indexes, loads (verified, mmap) and runs one
  query: the index's share of a ``tagstore query similar`` call, Python start-up included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK = 10_000
K = 10


def mixture(n: int, dim: int, seed: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` chunks of a seeded 256-cluster Gaussian mixture; ids start at ``start``."""
    centres = np.random.default_rng(12345).standard_normal((256, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        vectors = centres[rng.integers(0, 256, m)] + 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
        yield np.arange(start + lo, start + lo + m, dtype=np.int64), vectors


class Chunks:
    """Re-iterable chunks (training factories take a sampling pass first)."""

    def __init__(self, n: int, dim: int, seed: int):
        self.n, self.dim, self.seed = n, dim, seed

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return mixture(self.n, self.dim, self.seed)


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (Linux), so the next read comes from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def exact_top(n: int, dim: int, queries: np.ndarray) -> np.ndarray:
    """Exact top-K ids by cosine, streamed over the data chunks."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_s = np.full((len(q), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), K), -1, dtype=np.int64)
    for ids, vectors in mixture(n, dim, seed=1):
        s = q @ (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
        top = np.argsort(-all_s, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


PROCESS = """
import time; t0 = time.perf_counter()
import numpy as np
from tagstore.indexes import IndexFileInfo, load
info = IndexFileInfo.from_dict({record!r})
index = load(info.path, info)
q = np.load({queries!r})[:1]
index.search(q, 10, exclude_ids=[0])
print(time.perf_counter() - t0)
"""


def process_seconds(info, queries_path: Path) -> float:  # type: ignore[no-untyped-def]
    """Wall time of a fresh interpreter that opens the index and answers one query."""
    code = PROCESS.format(record=info.as_dict(), queries=str(queries_path))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def bench(n: int, dim: int, factory: str, queries: np.ndarray, truth: np.ndarray, folder: Path) -> dict[str, str]:
    from tagstore.indexes import build, load

    index, build_s = timed(lambda: build(Chunks(n, dim, seed=1), factory, dim, device="cpu"))
    path = folder / f"{factory.replace(',', '_')}-{n}.faiss"
    info, save_s = timed(lambda: index.save(path))
    del index
    loaded, load_s = timed(lambda: load(path, info))
    single = []
    for row in queries[:50]:
        _, s = timed(lambda row=row: loaded.search(row[None, :], K))
        single.append(s)
    (_, found), batch_s = timed(lambda: loaded.search(queries, K))
    recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found.tolist(), truth.tolist())])
    del loaded
    evict(path)
    t0 = time.perf_counter()
    load(path, info).search(queries[:1], K)
    cold_ms = (time.perf_counter() - t0) * 1000
    np.save(folder / "queries.npy", queries)
    process_s = min(process_seconds(info, folder / "queries.npy") for _ in range(3))
    path.unlink()
    return {
        "N": f"{n:,}",
        "dim": str(dim),
        "factory": factory,
        "build s": f"{build_s:.2f}",
        "save s": f"{save_s:.2f}",
        "load s": f"{load_s:.3f}",
        "cold 1q ms": f"{cold_ms:.0f}",
        "1-query ms": f"{statistics.median(single) * 1000:.1f}",
        "q/s batched": f"{len(queries) / batch_s:,.0f}",
        "recall@10": f"{recall:.3f}",
        "process s": f"{process_s:.2f}",
        "file MB": f"{info.size / 1e6:.0f}",
    }


def import_faiss_seconds() -> float:
    code = "import time, numpy; t = time.perf_counter(); import faiss; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated index sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--factory",
        action="append",
        help="a FAISS factory string (repeat for several; they contain commas); default: Flat and HNSW32",
    )
    parser.add_argument("--dir", type=Path, default=None, help="folder for index files (default: a temp dir)")
    args = parser.parse_args()

    import faiss

    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs; "
        f"import faiss after numpy: {min(import_faiss_seconds() for _ in range(3)) * 1000:.0f} ms",
        file=sys.stderr,
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            queries = next(mixture(args.queries, args.dim, seed=2, start=10**9))[1]
            truth = exact_top(n, args.dim, queries)
            for factory in args.factory or ["Flat", "HNSW32"]:
                print(f"N={n} {factory} ...", file=sys.stderr)
                rows.append(bench(n, args.dim, factory, queries, truth, Path(tmp)))
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if h not in ("factory",) else "---" for h in header) + "|")
    for row in rows:
        print("| " + " | ".join(row[h] for h in header) + " |")


if __name__ == "__main__":
    main()
