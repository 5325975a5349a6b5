"""`tagstore export-embeddings`, `tagstore import-embeddings`: embedding shards in and out of a store."""

from __future__ import annotations

from pathlib import Path

import typer

from tagstore.cli import common


def export_embeddings(
    directory: Path = typer.Argument(..., help="Folder to write the Parquet shards into (new or empty)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write every track with its embedding as Parquet shards (with the store's layout), for another store."""
    from tagstore import api

    with common.open_store() as store:
        done = api.export_embeddings(store, directory)
    if json_out:
        common.echo_json(done)
    else:
        typer.echo(f"exported {done['tracks']} tracks in {done['shards']} shards to {done['directory']} (layout {done['layout_digest']})")


def import_embeddings(
    directory: Path = typer.Argument(..., help="Folder of shards from `export-embeddings` or another cluster."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Import Parquet shards of the store's layout (others are refused), then update the index and tag scores."""
    from tagstore import api

    bar = common.ProgressBar("importing")
    with common.open_store() as store:
        try:
            report = api.import_embeddings(store, directory, progress=bar)
        finally:
            bar.close()
    if json_out:
        common.echo_json(report.to_dict())
    else:
        common.info(f"imported {len(report.added)}, updated {len(report.updated)}, skipped {len(report.skipped)}, "
                    f"failed {len(report.failed)} (failures recorded as the embedding run found them)")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("export-embeddings")(export_embeddings)
    app.command("import-embeddings")(import_embeddings)
