"""Few-shot quality beside a reference: tagstore's fits against scikit-learn's LogisticRegression on the
same vectors and the same draws.

    python benchmarks/bench_fewshot.py LABELS.csv [--embedders dsp] [--shots 1,2,5,10,20] [--draws 3]
                                       [--methods probe,ensemble] [--workers N]

Runs :func:`tagstore.evaluation.evaluate` (cached eval stores beside the CSV, as `tagstore eval`), then
fits, for each of its draws, ``sklearn.linear_model.LogisticRegression(C=1, class_weight="balanced")``
on the draw's positives against its negatives plus the same unlabelled train sample tagstore's fit sees
(:func:`tagstore.learning.sampling.sample_unlabelled`), all standardised with the train split's
statistics, and scores the test split. Prints a markdown table: macro AP (mean ± std over draws) per K
for each method and the reference, and macro F1 at each fit's threshold (the reference: its own 0.5).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `tagstore eval` does, before numpy loads

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tagstore.evaluation import evaluate  # noqa: E402
from tagstore.evaluation.fits import space  # noqa: E402
from tagstore.evaluation.labels import read_clips  # noqa: E402
from tagstore.evaluation.protocol import Result, aggregate, score_draw  # noqa: E402
from tagstore.evaluation.stores import STORE_DIR, embed_clips  # noqa: E402
from tagstore.learning.sampling import sample_unlabelled  # noqa: E402


def reference(result, labels: Path, spec: str) -> list[Result]:  # type: ignore[no-untyped-def]
    """scikit-learn's logistic regression on every draw of ``result``'s plan, in ``spec``'s vectors."""
    from sklearn.linear_model import LogisticRegression

    clips = read_clips(labels)
    _, X, row = embed_clips(spec, clips, labels.parent / STORE_DIR)
    kept = [c for c in clips if c.id in row]
    plan = result.plan
    sp = space(spec, X, row, kept, plan)
    Z = sp.stats.standardise(X)
    Z_test = sp.stats.standardise(sp.X_test)
    out = []
    for draw in plan.draws:
        if draw.full:
            continue
        pos = [row[i] for i in draw.pos_ids]
        neg = [row[i] for i in draw.neg_ids]
        unl = sample_unlabelled(sp.pool, set(pos) | set(neg))
        rows = np.r_[pos, neg, unl].astype(np.int64)
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg) + len(unl))]
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(Z[rows], y)
        s = model.decision_function(Z_test)
        r = score_draw(plan, draw, s, spec, "sklearn-logreg", 0.0)  # decision 0 = probability 0.5
        out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", type=Path)
    ap.add_argument("--embedders", default="dsp")
    ap.add_argument("--shots", default="1,2,5,10,20")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--methods", default="probe,ensemble")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    labels = args.labels.expanduser().absolute()
    shots = [int(k) for k in args.shots.split(",")]
    specs = args.embedders.split(";")
    print("tagstore fits ...", file=sys.stderr)
    result = evaluate(labels, specs, shots=shots, draws=args.draws, methods=args.methods.split(","),
                      workers=args.workers)  # fmt: skip
    results = list(result.results)
    for spec in specs:
        print(f"scikit-learn on {spec} ...", file=sys.stderr)
        results += reference(result, labels, spec)
    points = aggregate(results)
    print(f"{labels}: {len(result.plan.tags)} tags, {len(result.plan.eval_ids)} test clips, {args.draws} draws\n")
    print("| embedder | method | " + " | ".join(f"AP K={k}" for k in shots) + " | "
          + " | ".join(f"F1 K={k}" for k in shots) + " |")  # fmt: skip
    print("|---|---|" + "---:|" * (2 * len(shots)))
    for key in sorted({(p.embedder, p.method) for p in points}):
        by_k = {p.k: p for p in points if (p.embedder, p.method) == key}
        ap_cells = [f"{by_k[k].ap_mean:.3f} ± {by_k[k].ap_std:.3f}" if k in by_k else "" for k in shots]
        f1_cells = [f"{by_k[k].f1_mean:.3f}" if k in by_k and by_k[k].f1_mean is not None else "" for k in shots]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(ap_cells + f1_cells) + " |")


if __name__ == "__main__":
    main()
