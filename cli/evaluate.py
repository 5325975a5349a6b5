"""Evaluation: demo-corpus (a labelled synthetic corpus) and eval (the few-shot protocol on one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from tagstore.cli import common

RARE_FRACTION = 0.05
"""A tag on at most this fraction of the clips is listed as rare in the demo-corpus summary."""


def demo_corpus(
    out: Path = typer.Argument(..., help="Folder to write labels.csv, audio/ and midi/ into."),
    clips: int = typer.Option(400, "--clips", "-n", help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same corpus, byte for byte)."),
    clip_seconds: float = typer.Option(10.0, "--clip-seconds", help="Length of each clip in seconds (3-60)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Synthesise a labelled demo corpus (exact multi-label tags, split by track) for `tagstore eval`."""
    from tagstore.corpus import make_corpus

    bar = common.ProgressBar("rendering")
    try:
        s = make_corpus(out, n_clips=clips, seed=seed, clip_s=clip_seconds,
                        progress=lambda done, total: bar(done, total, ""))  # fmt: skip
    finally:
        bar.close()
    rare = [t for t, n in s.tag_counts.items() if n <= RARE_FRACTION * s.n_clips]
    if json_out:
        common.echo_json({"labels": str(s.labels_csv), "clips": s.n_clips, "tracks": s.n_tracks,
                          "train": s.n_train, "test": s.n_test, "tags": len(s.tag_counts),
                          "rare_tags": rare, "tag_counts": s.tag_counts, "sample_rate": s.sample_rate,
                          "clip_s": s.clip_s, "seconds": s.seconds})  # fmt: skip
        return
    typer.echo(f"wrote {s.n_clips} clips of {s.clip_s:g} s from {s.n_tracks} tracks "
               f"({s.n_train} train, {s.n_test} test) in {s.seconds:.1f} s: {s.labels_csv}")  # fmt: skip
    shown = ", ".join(rare[::-1][:12]) + (", ..." if len(rare) > 12 else "")
    typer.echo(f"{len(s.tag_counts)} tags, {len(rare)} rare (on at most {RARE_FRACTION:.0%} of clips): {shown}")


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated whole numbers, e.g. 1,2,5") from None


def eval_cmd(
    labels: Path = typer.Argument(..., help="labels.csv (columns path,track,tags,split), e.g. from demo-corpus."),
    embedders: str = typer.Option(
        "dsp", "--embedders", "-e", help="Comma-separated embedders, one eval store each (dsp+musicnn: combined)."
    ),
    shots: str = typer.Option("1,2,5,10,20", "--shots", "-k", help="Comma-separated K: training positives per tag."),
    draws: int = typer.Option(10, "--draws", help="Random draws per K."),
    methods: str = typer.Option(
        "probe,prototype,ensemble", "--methods", "-m", help="Comma-separated: probe, prototype, ensemble."
    ),
    neg_per_pos: int = typer.Option(1, "--neg-per-pos", help="Labelled negatives per positive in a draw (-1: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws."),
    store_root: Optional[Path] = typer.Option(
        None, "--store-root", "--store", help="Folder of the eval stores (default: .tagstore-eval beside the CSV)."
    ),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write an HTML report with learning curves here."),
    workers: int = typer.Option(0, "--workers", help="Processes that fit tags (0: one per CPU core)."),
    json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Few-shot evaluation of tag learning on a labelled corpus: macro AP / ROC-AUC, and F1 of the predicted
    set at each fit's threshold, per embedder, method, K."""
    # Each fit is a few hundred rows: one BLAS thread per worker process runs them several times faster
    # than a thread pool per process. Only takes effect before numpy loads; an explicit setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from tagstore.embedders import join_plus
    from tagstore.evaluation import evaluate
    from tagstore.evaluation.report import fmt, k_label

    bar = common.ProgressBar("eval")
    try:
        result = evaluate(
            labels, embedders=[join_plus(e) for e in embedders.split(",")], shots=_ints(shots, "--shots"),
            draws=draws, methods=[m.strip() for m in methods.split(",") if m.strip()], seed=seed,
            store_root=store_root, progress=bar, neg_per_pos=None if neg_per_pos < 0 else neg_per_pos,
            workers=workers if workers > 0 else os.cpu_count() or 1,
        )
    finally:
        bar.close()
    page = result.write_report(report) if report else None
    if json_out:
        common.echo_json({**result.to_dict(), "report": str(page) if page else None})
    else:
        common.table([(p.embedder, p.method, k_label(p.k), p.n_draws, p.n_tags, fmt(p.ap_mean, p.ap_std),
                       fmt(p.auc_mean, p.auc_std), fmt(p.f1_mean, p.f1_std)) for p in result.curves],
                     ["embedder", "method", "K", "draws", "tags", "macro AP", "macro ROC-AUC", "F1 at threshold"])  # fmt: skip
    fits = sum(e.fits for e in result.embedders)
    common.info(f"{len(result.plan.tags)} tags, {len(result.plan.eval_ids)} test clips, {fits} fits in "
                f"{result.seconds:.1f} s" + (f"; report: {page}" if page else ""))  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("demo-corpus")(demo_corpus)
    app.command("eval")(eval_cmd)
