"""The GPU benchmark of ``benchmarks/gpu_check.sh``: exact search and the embedders on one device, one table.

    python benchmarks/bench_gpu.py --device cuda                      # 1M x 1408 search, 60-s clips
    python benchmarks/bench_gpu.py --device cpu --n 100000 --seconds 20

Search: ``--n`` seeded unit vectors of ``--dim`` (1,408 = the Combined VGGish + OpenL3 + PaSST layout),
``--queries`` queries taken from the data plus noise, k = 10. Rows: FAISS Flat on the CPU (faiss-cpu),
torch exact search (:mod:`tagstore.indexes.torch_exact`) on ``--device``, and FAISS GPU Flat / IVF when
the installed FAISS sees a GPU. "q/s" is batched throughput (all queries in one call, best of 3);
"1-query ms" the median latency of single queries; "same as Flat" checks every rank: the ids are equal,
or differ only where the scores tie (within 1e-5), and reports the largest score difference.

Embedders: musicnn and the Combined (VGGish + OpenL3 + PaSST) with seeded random weights of the
published shapes (speed does not depend on the values), one ``--seconds`` clip in memory through the
host (resample, window, batch, forward, pool); x real time = clip seconds per wall second. Then an ingest
of ``--files`` FLAC files with musicnn, decoding in this process and in 2 worker processes ahead of the
embedder: "busy" is the share of wall time spent in the model's forward passes (on CUDA: the time the
GPU is given work; each pass ends by copying its result back, so it is synchronous).

Prints one markdown table on stdout, progress on stderr. A part whose package is missing (faiss, a GPU
build of FAISS, CUDA) is a row that says it was skipped and why.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # bench_models' random weights; the tests' musicnn wheel
SR = 44100
K = 10
Row = tuple[str, str, str, str]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(torch, device: str) -> None:  # type: ignore[no-untyped-def]
    if device == "cuda":
        torch.cuda.synchronize()


# --- search ----------------------------------------------------------------------------------------


def make_data(n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # in chunks: one 1M x 1408 float64 temporary would be 11 GB
        x[start : start + 65536] = rng.standard_normal((min(65536, n - start), dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, queries, replace=False)] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
    return np.arange(n, dtype=np.int64) * 3 + 1, x, q.astype(np.float32)


def timed(fn, repeats: int = 3) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def latency_ms(search, queries: np.ndarray, n: int = 20) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(min(n, len(queries))):
        t0 = time.perf_counter()
        search(queries[i : i + 1])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def same_as(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> str:
    """"yes (largest score difference ...)" when every rank has the same id, or a tied score; else what differs."""
    rs, ri = reference
    os_, oi = other
    diff = float(np.max(np.abs(rs - os_)))
    differ = ri != oi
    untied = differ & (np.abs(rs - os_) > 1e-5)
    if untied.any():
        return f"NO: {int(untied.sum())} of {ri.size} ranks differ (largest score difference {diff:.1e})"
    ties = int(differ.sum())
    return f"yes (largest score difference {diff:.1e}{f', {ties} tied ranks swapped' if ties else ''})"


def search_rows(n: int, dim: int, queries: int, device: str) -> list[Row]:
    import torch

    from tagstore.indexes.torch_exact import TorchExact

    size = f"{n:,} x {dim}, {queries} q"
    log(f"search: making {n:,} x {dim} vectors")
    ids, x, q = make_data(n, dim, queries)
    rows: list[Row] = []
    reference = None
    try:
        import faiss

        from tagstore.indexes import build
    except ImportError as exc:
        rows.append(("search: FAISS Flat", "cpu", size, f"skipped: faiss not importable ({exc})"))
    else:
        log("search: FAISS Flat on the CPU")
        flat = build([(ids, x)], "Flat", dim, "cpu")
        wall, reference = timed(lambda: flat.search(q, K))
        ms = latency_ms(lambda one: flat.search(one, K), q)
        rows.append(("search: FAISS Flat (faiss-cpu)", f"cpu, {faiss.omp_get_max_threads()} threads", size,
                     f"{queries / wall:,.0f} q/s, 1-query {ms:.1f} ms"))  # fmt: skip
        del flat
    if device == "cuda" and not torch.cuda.is_available():
        rows.append(("search: torch exact", "cuda", size, "skipped: torch sees no CUDA device"))
    else:
        log(f"search: torch exact on {device}")
        t0 = time.perf_counter()
        exact = TorchExact(ids, x, device=device)
        sync(torch, device)
        upload = time.perf_counter() - t0
        exact.search(q[:2], K)  # warm-up: kernels, allocator
        wall, found = timed(lambda: exact.search(q, K))
        ms = latency_ms(lambda one: exact.search(one, K), q)
        equal = same_as(reference, found) if reference is not None else "no FAISS reference"
        rows.append((f"search: torch exact (copy to device {upload:.1f} s)", device, size,
                     f"{queries / wall:,.0f} q/s, 1-query {ms:.1f} ms; same as Flat: {equal}"))  # fmt: skip
        del exact
        if device == "cuda":
            torch.cuda.empty_cache()
    rows += faiss_gpu_rows(ids, x, q, size, reference)
    return rows


def faiss_gpu_rows(ids: np.ndarray, x: np.ndarray, q: np.ndarray, size: str, reference) -> list[Row]:  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError:
        return []
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return [("search: FAISS GPU Flat / IVF", "cuda", size, "skipped: the installed FAISS has no GPU build (faiss-cpu)")]
    from tagstore.indexes import build

    rows: list[Row] = []
    for factory in ("Flat", "IVF4096,Flat"):
        log(f"search: FAISS GPU {factory}")
        t0 = time.perf_counter()
        index = build([(ids, x)], factory, x.shape[1], "cuda")  # trained (IVF) and filled on the GPU
        built = time.perf_counter() - t0
        index.search(q[:2], K)
        wall, found = timed(lambda: index.search(q, K))
        ms = latency_ms(lambda one: index.search(one, K), q)
        note = same_as(reference, found) if factory == "Flat" and reference is not None else ""
        if factory != "Flat" and reference is not None:
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found[1], reference[1])])
            note = f"recall@10 {recall:.3f} (nprobe 16)"
        note += f"; built on the GPU in {built:.1f} s"
        rows.append((f"search: FAISS GPU {factory}", "cuda", size, f"{len(q) / wall:,.0f} q/s, 1-query {ms:.1f} ms; {note}"))
    return rows


# --- embedders -------------------------------------------------------------------------------------


def install_weights(cache: Path, combined: bool) -> None:
    from test_musicnn import fake_wheel

    from tagstore.embedders import pretrained

    log("installing random musicnn weights")
    pretrained.import_file("musicnn", fake_wheel(cache.parent / "musicnn.whl"), unverified=True, weights_dir=cache)
    if combined:
        from bench_models import install_random_weights

        install_random_weights(cache)


def timed_forward(embedder) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Wrap each backend's forward call to add up its wall time (and windows) in the returned dict."""
    acc = {"s": 0.0, "windows": 0}
    for e in embedder.embedders:
        original = e.embed_tags

        def timed_call(windows, original=original):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = original(windows)
            acc["s"] += time.perf_counter() - t0
            acc["windows"] += windows.shape[0]
            return out

        e.embed_tags = timed_call  # type: ignore[method-assign]
    return acc


def embedder_rows(device: str, seconds: float, specs: list[str]) -> list[Row]:
    import torch

    from bench_models import music
    from tagstore.embedders.host import TrackEmbedder

    if device == "cuda" and not torch.cuda.is_available():
        return [("embed: " + s, "cuda", "", "skipped: torch sees no CUDA device") for s in specs]
    rows: list[Row] = []
    clip = music(seconds)
    for spec in specs:
        log(f"embed: {spec} on {device}, {seconds:.0f} s clip")
        te = TrackEmbedder.from_spec(",".join(f"{s}:device={device}" for s in spec.split("+")))
        te.embed_audio(music(min(seconds, 11.0), seed=1), SR)  # warm-up
        acc = timed_forward(te)
        sync(torch, device)
        t0 = time.perf_counter()
        te.embed_audio(clip, SR)
        sync(torch, device)
        wall = time.perf_counter() - t0
        batches = ", ".join(f"{e.name} batch {e.batch_size}" for e in te.embedders)
        rows.append((f"embed: {spec.replace('+', ' + ')}", device, f"{seconds:.0f} s clip, {acc['windows']} windows",
                     f"{seconds / wall:,.1f}x real time ({batches})"))  # fmt: skip
    return rows


def ingest_rows(device: str, seconds: float, files: int) -> list[Row]:
    import soundfile as sf
    import torch

    from bench_models import music
    from tagstore.embedders.host import TrackEmbedder

    if device == "cuda" and not torch.cuda.is_available():
        return [("ingest: musicnn, decoding ahead", "cuda", "", "skipped: torch sees no CUDA device")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tagstore-gpu-files-") as tmp:
        paths = []
        for i in range(files):
            paths.append(Path(tmp) / f"clip-{i:02d}.flac")
            sf.write(str(paths[-1]), music(seconds, seed=i), SR)
        te = TrackEmbedder.from_spec(f"musicnn:device={device}")
        te.embed_file(paths[0])  # warm-up
        acc = timed_forward(te)
        for workers in (0, 2):
            acc.update(s=0.0, windows=0)
            t0 = time.perf_counter()
            done = sum(1 for _, v in te.embed_ahead(paths, lambda p: p, workers) if not isinstance(v, Exception))
            wall = time.perf_counter() - t0
            where = "in this process" if workers == 0 else f"in {workers} worker processes ahead (their start included)"
            rows.append((f"ingest: musicnn, decoding {where}", device, f"{done} x {seconds:.0f} s FLAC",
                         f"{files * seconds / wall:,.1f}x real time, busy {100 * acc['s'] / wall:.0f}% of the wall time"))  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the search benchmark")
    ap.add_argument("--dim", type=int, default=1408)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length for the embedders")
    ap.add_argument("--files", type=int, default=8, help="files in the ingest benchmark")
    ap.add_argument("--models", default="musicnn,vggish+openl3+passt", help="specs; '+' joins a Combined")
    args = ap.parse_args()
    import torch

    rows: list[Row] = []
    rows += search_rows(args.n, args.dim, args.queries, args.device)
    specs = [s for s in args.models.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="tagstore-gpu-weights-") as tmp:
        cache = Path(tmp) / "weights"
        install_weights(cache, combined=any("+" in s or s != "musicnn" for s in specs))
        os.environ["TAGSTORE_WEIGHTS_DIR"] = str(cache)
        rows += embedder_rows(args.device, args.seconds, specs)
        rows += ingest_rows(args.device, min(args.seconds, 30.0), args.files)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"\ntorch {torch.__version__}, {gpu}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| check | device | size | result |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
