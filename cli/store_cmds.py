"""`tagstore init`, `tagstore info`, `tagstore rebuild`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tagstore.cli import common


def init(
    path: Optional[Path] = typer.Argument(None, help="Store folder (default: --store / $TAGSTORE_STORE / per-user)."),
    embedders: Optional[str] = typer.Option(None, "--embedders", "-e", help="Embedder spec(s), comma-separated, e.g. dsp,musicnn (default: config `embedders`, else dsp,musicnn, weights fetched on first use)."),
    index: Optional[str] = typer.Option(None, "--index", help="auto (chosen by size: Flat, then IVF) or a FAISS factory string: Flat, HNSW32, IVF1024,SQ8 ... (default: config `index`, else auto)."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", help="Most memory the auto index may take, e.g. 8GB (default: half the RAM)."),
    json_out: bool = typer.Option(False, "--json", help="Print the new store's info as JSON."),
) -> None:
    """Create a store: a DuckDB catalogue and a folder for its vector index."""
    from tagstore import api

    from tagstore.config import DEFAULT_EMBEDDERS

    s = common.settings()
    default = embedders is None and s.embedders == DEFAULT_EMBEDDERS  # the default layout fetches its weights
    embedders, index = embedders or s.embedders, index or s.index
    store = api.init(path or s.store, embedders=embedders, factory=index, runtime=common.runtime(s),
                     memory_budget=memory_budget, fetch_weights=common.info if default else None)
    if json_out:
        common.echo_json(api.info(store))
    else:
        typer.echo(f"created store {store.path} ({store.layout.spec}, {store.layout.dim}-d, index {index})")


def info(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Store path, embedder layout, counts, index type, size and version."""
    data = common.via_server("GET", "/api/info")
    if data is None:
        from tagstore import api

        with common.open_store() as store:
            data = api.info(store)
    if json_out:
        common.echo_json(data)
        return
    idx = data["index"]
    rows = [
        ("store", data["store"]),
        ("embedders", f"{data['embedders']} ({data['dim']}-d)"),
        *[(f"  {b['name']}", f"{b['dim']}-d @ {b['sample_rate']} Hz, version {b['version']}") for b in data["layout"]],
        ("tracks", data["counts"]["tracks"]),
        ("audio", f"{data['total_duration_s'] / 3600:.2f} h"),
        ("tags", data["counts"]["tags"]),
        ("failed files", data["counts"]["failures"]),
        ("catalogue", f"{data['catalogue_bytes'] / 1e6:.1f} MB"),
        ("index", "none yet" if idx is None else
            f"v{idx['version']} {idx['factory']} ({idx['metric']}), {idx['count']} vectors, "
            f"{idx['size_bytes'] / 1e6:.1f} MB, built {idx['built_at']}{'' if idx['current'] else ' (behind the catalogue)'}"),
        ("index choice", _choice_line(data)),
        ("search on", f"{data['compute']['search']} (search_device {data['compute']['search_device']}"
            f"{', index built on ' + data['compute']['index_built_on'] if data['compute']['index_built_on'] else ''})"),
    ]  # fmt: skip
    for key, value in rows:
        typer.echo(f"{key:<14}{value}")


def _choice_line(data: dict) -> str:
    """How the index was chosen and what its search measured, in one line."""
    idx = data["index"]
    spec = data["index_factory"]
    if idx is None:
        return f"{spec} (decided at the first build)"
    line = f"{spec}" + (f": {idx['choice']['reason']}" if idx.get("choice") else "")
    if idx.get("exact"):
        return line + "; exact search"
    if idx.get("recall_at_10") is not None:
        probe = f"nprobe {idx['nprobe']}, " if idx.get("nprobe") else ""
        line += f"; {probe}recall@10 {idx['recall_at_10']:.3f} vs exact (trained at {idx['trained_count']} tracks)"
    return line


def rebuild(
    re_embed: bool = typer.Option(False, "--re-embed", help="Recompute every embedding first (after an embedder changed)."),
    embedders: Optional[str] = typer.Option(None, "--embedders", "-e", help="With --re-embed: switch the store to these embedders."),
    index: Optional[str] = typer.Option(None, "--index", help="Switch the index: auto (chosen by size) or a FAISS factory string (Flat, IVF1024,SQ8 ...)."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", help="Most memory the auto index may take, e.g. 8GB (kept for later builds)."),
    json_out: bool = typer.Option(False, "--json", help="Print the new index record as JSON."),
) -> None:
    """Rebuild the vector index from the stored embeddings (atomic swap), or re-embed first."""
    from tagstore import api

    bar = common.ProgressBar("re-embedding" if re_embed else "indexing")
    with common.open_store() as store:
        try:
            record = api.rebuild(store, re_embed=re_embed, embedders=embedders, progress=bar, index=index,
                                 memory_budget=memory_budget)  # fmt: skip
        finally:
            bar.close()
    out = {"version": record.version, "file": record.file, "factory": record.factory, "count": record.count,
           "checksum": record.checksum, "size_bytes": record.size, "build_s": record.params.get("build_s"),
           "spec": record.params.get("spec"), "nprobe": record.params.get("nprobe"),
           "recall_at_10": record.params.get("recall_at_10")}  # fmt: skip
    if json_out:
        common.echo_json(out)
    else:
        measured = f", recall@10 {out['recall_at_10']:.3f} at nprobe {out['nprobe']}" if out["nprobe"] else ""
        typer.echo(f"index v{out['version']}: {out['count']} vectors, {out['factory']} ({out['spec']}){measured}, "
                   f"built in {out['build_s']} s")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(info)
    app.command()(rebuild)
