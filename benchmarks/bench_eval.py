"""Benchmark the few-shot evaluation: time per fit (by method and K) and the whole `eval` on a corpus.

    python benchmarks/bench_eval.py [--clips 400] [--clip-seconds 10] [--embedders dsp]
                                    [--shots 1,2,5,10,20] [--draws 3] [--workers N] [--out DIR]

Synthesises the demo corpus into --out (kept and reused when its labels.csv exists), then runs
:func:`tagstore.evaluation.evaluate` three times: first (eval stores created and every clip embedded, unless
--out already holds them) with one fitting process, again with one process (nothing embedded), and with
--workers processes (default: one per core) and ``keep_fits`` for the per-fit breakdown. Prints a
markdown table on stdout, progress on stderr. Like ``tagstore eval``, it sets OPENBLAS_NUM_THREADS=1
unless the environment says otherwise (run with OPENBLAS_NUM_THREADS=2 to see why). Fitting dominates
once the stores exist; CV over the C grid starts at 3 positives, hence the jump from K=2 to K=5 for
probe and ensemble.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `tagstore eval` does, before numpy loads

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

from tagstore.corpus import make_corpus  # noqa: E402
from tagstore.evaluation import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--embedders", default="dsp")
    ap.add_argument("--shots", default="1,2,5,10,20")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tagstore-bench-eval")
    args = ap.parse_args()
    shots = [int(k) for k in args.shots.split(",")]
    embedders = args.embedders.split(",")
    out = args.out / f"corpus-{args.clips}x{args.clip_seconds:g}s"
    labels = out / "labels.csv"
    rows = []
    if not labels.is_file():
        print(f"rendering {args.clips} clips into {out}", file=sys.stderr)
        s = make_corpus(out, n_clips=args.clips, seed=0, clip_s=args.clip_seconds)
        rows.append(("demo-corpus", f"{s.seconds:.1f} s", f"{s.n_clips} clips, {s.workers} workers"))
    store_root = args.out / f"stores-{args.clips}x{args.clip_seconds:g}s"
    first = "stores reused (delete --out to time embedding)" if store_root.exists() else "embeds every clip"
    kw = dict(embedders=embedders, shots=shots, draws=args.draws, store_root=store_root)
    for label, note, workers in (("eval, 1 process", first, 1), ("eval, 1 process", "nothing embedded", 1),
                                 (f"eval, {args.workers} processes", "keep_fits", args.workers)):  # fmt: skip
        print(f"{label} ...", file=sys.stderr)
        t = time.perf_counter()
        result = evaluate(labels, keep_fits=workers > 1, workers=workers, **kw)
        total = time.perf_counter() - t
        parts = "; ".join(f"{e.spec}: embed {e.embed_s:.1f} s ({e.embedded} clips), load {e.load_s:.2f} s, "
                          f"fit {e.fit_s:.1f} s, score {e.score_s:.2f} s, {e.fits} fits" for e in result.embedders)
        rows.append((label, f"{total:.1f} s", f"{note}; {parts}".strip("; ")))
    by_cell = defaultdict(list)
    for f in result.fits or ():
        by_cell[(f.embedder, f.method, "full" if f.draw.full else f.draw.k)].append(f.fit_s)
    order = lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]).zfill(4))  # noqa: E731
    for (emb, method, k), times in sorted(by_cell.items(), key=order):
        rows.append((f"fit {emb}/{method} K={k}", f"{1000 * statistics.median(times):.1f} ms",
                     f"median of {len(times)} (max {1000 * max(times):.0f} ms)"))  # fmt: skip
    threads = os.environ["OPENBLAS_NUM_THREADS"]
    print(f"corpus: {args.clips} clips x {args.clip_seconds:g} s; {len(result.plan.tags)} tags evaluated, "
          f"{len(result.plan.eval_ids)} test clips; shots {args.shots}, {args.draws} draws, "
          f"{os.cpu_count()} CPUs, BLAS threads {threads}\n")  # fmt: skip
    print("| step | time | notes |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
