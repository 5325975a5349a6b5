"""Benchmark tag learning: fit a tag from 20 positives (CV included) and score the catalogue; score new
tracks for many tags.

    python benchmarks/bench_learn.py [--n 100000] [--dim 512] [--positives 20] [--sample 400] [--tags 50]

Data: a seeded synthetic catalogue, n x dim float32: a 32-factor low-rank signal plus isotropic noise
around an offset mean; the tag is the top 1% along a random factor direction. Every row is the median
of --repeats runs (min in brackets). Prints a markdown table on stdout, progress on stderr:

* stats: CatalogueStats over the catalogue in 64k-row chunks (once per catalogue, not per tag).
* fit <method>: fit_tag with 20 positives and a 400-track catalogue sample (200 negatives, 200
  reference), C grid and threshold cross-validated (5 folds x 5 C for probe/ensemble).
* score all: TagModel.score over the whole catalogue.
* fit + score: the two together, the library's share of adding a tag.
* new tracks x tags: score_tags of 1,000 new tracks under 50 ensemble models.
The AP column is the fitted model's AP on the catalogue (positives used for fitting left out).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

from tagstore.learning import CatalogueStats, average_precision, fit_tag, score_tags


def catalogue(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (n, dim) float32 vectors and the (n,) bool labels of a rare (1%) tag."""
    rng = np.random.default_rng(seed)
    k = 32
    G = rng.standard_normal((n, k), dtype=np.float32)
    L = rng.standard_normal((k, dim), dtype=np.float32) * np.linspace(2.0, 0.3, k, dtype=np.float32)[:, None]
    X = G @ L
    X += rng.standard_normal((n, dim), dtype=np.float32)
    X += 5.0
    proj = G @ rng.standard_normal(k, dtype=np.float32)
    return X, proj > np.quantile(proj, 0.99)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median s, min s, last result) of ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--positives", type=int, default=20)
    ap.add_argument("--sample", type=int, default=400)
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    print(f"catalogue {args.n} x {args.dim} ...", file=sys.stderr)
    X, tag = catalogue(args.n, args.dim)
    rng = np.random.default_rng(1)
    pos = rng.permutation(np.flatnonzero(tag))[: args.positives]
    rest = np.setdiff1d(np.arange(args.n), pos)
    sample = rng.choice(rest, args.sample, replace=False)
    rows: list[tuple[str, float, float, str]] = []

    med, best, stats = timed(lambda: CatalogueStats.from_embeddings(X), max(1, args.repeats // 2))
    rows.append(("stats (once per catalogue)", med, best, ""))
    models = {}
    for method in ("probe", "prototype", "ensemble"):
        print(f"fit {method} ...", file=sys.stderr)
        fit = functools.partial(fit_tag, X[pos], None, X[sample], stats, method=method)
        f_med, f_best, model = timed(fit, args.repeats)
        s_med, s_best, scores = timed(functools.partial(model.score, X), args.repeats)
        t_med, t_best, _ = timed(lambda fit=fit: fit().score(X), args.repeats)
        quality = (
            f"AP {average_precision(tag[rest], scores[rest]):.3f}, C {model.C:g}, cv AP {model.cv_ap:.3f}"
        )
        rows += [
            (f"fit {method}", f_med, f_best, quality),
            (f"score all ({method})", s_med, s_best, ""),
            (f"fit + score all ({method})", t_med, t_best, ""),
        ]
        models[method] = model

    print("score new tracks ...", file=sys.stderr)
    tags = [models["ensemble"]] * args.tags
    new = catalogue(args.new, args.dim, seed=7)[0]
    med, best, _ = timed(lambda: score_tags(tags, new), args.repeats)
    rows.append((f"{args.new} new tracks x {args.tags} tags", med, best, ""))

    load = os.getloadavg()[0]
    print(f"n={args.n}, d={args.dim}, {args.positives} positives, sample {args.sample}, "
          f"{os.cpu_count()} CPUs, load avg {load:.1f}, numpy {np.__version__}\n")  # fmt: skip
    print("| step | median s | (min s) | notes |\n|---|---:|---:|---|")
    for name, m, b, note in rows:
        print(f"| {name} | {m:.3f} | ({b:.3f}) | {note} |")


if __name__ == "__main__":
    main()
