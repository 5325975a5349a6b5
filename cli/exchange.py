"""`tagstore export` (the catalogue to CSV / JSON / NDJSON / Parquet) and `tagstore import-labels` (tags from a CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tagstore.cli import common


def export(
    match: Optional[str] = typer.Argument(None, help="Only tracks with this text in path, title or artist."),
    fmt: Optional[str] = typer.Option(None, "--format", "-F", help="csv, json, nl (NDJSON) or parquet (default: config `export_format`, else csv)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead of stdout; needed for parquet."),
    embeddings: bool = typer.Option(False, "--embeddings", help="Also each track's raw embedding (parquet, json, nl)."),
    artist: Optional[str] = typer.Option(None, help="Filter by artist (substring)."),
    album: Optional[str] = typer.Option(None, help="Filter by album (substring)."),
    genre: Optional[str] = typer.Option(None, help="Filter by genre (substring)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", min=1, help="At most this many tracks."),
) -> None:
    """The catalogue, one row per track: file metadata, predicted learned and model tags, a score column per tag."""
    from tagstore import api

    fmt = fmt or common.settings().export_format
    with common.open_store() as store:
        data, text = api.export(store, fmt, output, embeddings=embeddings, match=match, artist=artist, album=album,
                                genre=genre, limit=limit)  # fmt: skip
    if text is not None:
        typer.echo(text, nl=False)
    else:
        common.info(f"wrote {len(data.rows)} tracks x {len(data.columns)} columns to {output} ({fmt})")


def import_labels(
    labels: Path = typer.Argument(..., help="CSV with columns path (or id), tags (';'-separated), optionally negative_tags."),
    json_out: bool = typer.Option(False, "--json", help="Print the tags' summaries as JSON."),
) -> None:
    """Create or extend every tag a labels CSV names, in one step: a bad row changes nothing."""
    from tagstore import api

    with common.open_store() as store:
        summaries = api.import_labels(store, labels)
    if json_out:
        common.echo_json([s.to_dict() for s in summaries])
        return
    for s in summaries:
        typer.echo(f"tag {s.name}: {s.n_pos} positive, {s.n_neg} negative examples, {s.method}; "
                   f"{s.predicted} of {s.scored} tracks predicted")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("import-labels")(import_labels)
