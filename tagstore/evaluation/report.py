"""The evaluation report: one static HTML page with learning curves (PNG) and per-tag tables.

``write_report(results, out_dir)`` writes ``out_dir/index.html``, ``out_dir/macro_ap.png`` and
``out_dir/macro_auc.png``. The curves show macro AP and macro ROC-AUC against K (log2 axis) for each
(embedder, method): mean over draws with a ±1 std band, and the full-train ceiling as a dashed line in
the same colour. Tables: the curve points, and per-tag AP (mean ± std over draws) for each K.
matplotlib is imported only here, and only its Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tagstore.fileio import atomic_write
from tagstore.evaluation.protocol import CurvePoint, Result, aggregate, per_tag_ap

PLOTS = (("ap", "macro_ap.png", "Macro average precision"), ("auc", "macro_auc.png", "Macro ROC-AUC"))
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:48%;margin-right:1%}"""


def k_label(k: int | None) -> str:
    """How a K is shown: the number, or "full" for the full-train ceiling."""
    return "full" if k is None else str(k)


def fmt(mean: float | None, std: float | None) -> str:
    """A mean ± std cell, three decimals: ``0.812 ± 0.031`` (empty when there is no value)."""
    return "" if mean is None or std is None else f"{mean:.3f} ± {std:.3f}"


def _plot(points: list[CurvePoint], metric: str, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = sorted({(p.embedder, p.method) for p in points})
    colours = [f"C{i % 10}" for i in range(len(series))]
    all_k: set[int] = set()
    for (emb, method), colour in zip(series, colours):
        pts = [p for p in points if (p.embedder, p.method) == (emb, method)]
        curve = [p for p in pts if p.k is not None]
        label = f"{emb} / {method}"
        if curve:
            k = [p.k for p in curve]
            mean = [getattr(p, f"{metric}_mean") for p in curve]
            std = [getattr(p, f"{metric}_std") for p in curve]
            all_k.update(k)
            ax.plot(k, mean, "o-", color=colour, label=label)
            ax.fill_between(k, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=colour, alpha=0.15, linewidth=0)
        for p in pts:
            if p.k is None:
                ax.axhline(getattr(p, f"{metric}_mean"), color=colour, linestyle="--", linewidth=1.2,
                           label=f"{label} (full train)")
    if all_k:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_k), [str(k) for k in sorted(all_k)])
    ax.set_xlabel("K (training positives per tag)")
    ax.set_ylabel(title)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda sink: fig.savefig(sink, format="png", metadata={"Software": None}))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(points: list[CurvePoint]) -> str:
    rows = [[p.embedder, p.method, k_label(p.k), str(p.n_draws), str(p.n_tags),
             fmt(p.ap_mean, p.ap_std), fmt(p.auc_mean, p.auc_std), fmt(p.f1_mean, p.f1_std)] for p in points]
    return _table(["embedder", "method", "K", "draws", "tags", "macro AP", "macro ROC-AUC",
                   "macro F1 at threshold"], rows)  # fmt: skip


def _per_tag(results: list[Result]) -> str:
    parts = []
    for (emb, method), tags in per_tag_ap(results).items():
        ks = sorted({k for by_k in tags.values() for k in by_k},
                    key=lambda k: float("inf") if k is None else k)
        rows = [[tag] + [fmt(*by_k[k]) if k in by_k else "" for k in ks]
                for tag, by_k in sorted(tags.items())]
        parts.append(f"<h3>{html.escape(emb)} / {html.escape(method)}</h3>"
                     + _table(["tag"] + [f"AP @ K={k_label(k)}" for k in ks], rows))
    return "".join(parts)


def write_report(results: Iterable[Result], out_dir: str | os.PathLike, *,
                 title: str = "tagstore few-shot evaluation",
                 notes: Mapping[str, str] | None = None) -> Path:
    """Write the report for ``results`` into ``out_dir`` (created if needed); returns index.html's path.

    ``notes`` are shown as a key/value list under the title (corpus, seed, shots, ...). Raises
    ValueError when ``results`` is empty.
    """
    results = list(results)
    if not results:
        raise ValueError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = aggregate(results)
    for metric, name, label in PLOTS:
        _plot(points, metric, label, out / name)
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in (notes or {}).items())
    images = "".join(f'<img src="{name}" alt="{html.escape(label)} against K">'
                     for _, name, label in PLOTS)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><ul>{facts}</ul>"
            f"<h2>Learning curves</h2><p>Mean over draws of the macro average over tags; band ±1 std; "
            f"dashed: full-train ceiling.</p>{images}<h2>Macro scores</h2>{_summary(points)}"
            f"<h2>Average precision per tag</h2>{_per_tag(results)}</body></html>\n")
    index = out / "index.html"
    atomic_write(index, page)
    return index
