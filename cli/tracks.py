"""`tagstore add`, `tagstore remove`, `tagstore tracks`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tagstore.cli import common


def add(
    paths: list[str] = typer.Argument(..., help="Audio files or folders (walked recursively)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be added; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Tracks committed per transaction."),
) -> None:
    """Add audio files to the store; already stored files are skipped, bad files reported."""
    from tagstore import api

    bar = common.ProgressBar("adding")
    with common.open_store() as store:
        try:
            report = api.add(store, paths, dry_run=dry_run, progress=bar, batch_tracks=batch_size)
        finally:
            bar.close()
    if json_out:
        common.echo_json(report.to_dict())
    elif dry_run:
        for item in report.added:
            typer.echo(f"would add     {item['path']}")
        for item in report.updated:
            typer.echo(f"would update  {item['path']} (id {item['id']}, content changed)")
        for item in report.skipped:
            typer.echo(f"would skip    {item['path']} ({item['reason']})")
        for item in report.failed:
            typer.echo(f"cannot read   {item['path']} ({item['reason']})")
    else:
        speed = report.audio_seconds / report.seconds if report.seconds else 0.0
        common.info(
            f"added {len(report.added)}, updated {len(report.updated)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)} in {report.seconds:.1f} s ({speed:.0f}x real time)"
        )
        for item in report.failed:
            typer.echo(f"failed: {item['reason']}", err=True)
    if report.failed:
        raise typer.Exit(1)


def remove(
    tracks: list[str] = typer.Argument(..., help="Catalogue ids or stored paths."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be removed; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the removed tracks as JSON."),
) -> None:
    """Remove tracks with their embeddings, tag examples and scores (audio files are not touched)."""
    from tagstore import api

    with common.open_store() as store:
        removed = api.remove(store, tracks, dry_run=dry_run)
    if json_out:
        common.echo_json([t.to_dict() for t in removed])
        return
    verb = "would remove" if dry_run else "removed"
    for t in removed:
        typer.echo(f"{verb} {t.id}\t{t.path}")


def tracks(
    match: Optional[str] = typer.Argument(None, help="Case-insensitive text to find in path, title or artist."),
    artist: Optional[str] = typer.Option(None, help="Filter by artist (substring)."),
    album: Optional[str] = typer.Option(None, help="Filter by album (substring)."),
    genre: Optional[str] = typer.Option(None, help="Filter by genre (substring)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", help="At most this many tracks."),
    failed: bool = typer.Option(False, "--failed", help="List files that failed to ingest instead."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the tracks in the store."""
    from tagstore import api

    with common.open_store() as store:
        rows = api.failures(store) if failed else []
        found = [] if failed else api.tracks(store, match=match, artist=artist, album=album, genre=genre, limit=limit)
    if failed:
        if json_out:
            common.echo_json(rows)
        else:
            common.table([(r["path"], r["error"], r["reason"]) for r in rows], ["path", "error", "reason"])
        return
    if json_out:
        common.echo_json([t.to_dict() for t in found])
    else:
        common.table(
            [(t.id, f"{t.duration_s:.1f}", t.artist, t.title, t.path) for t in found],
            ["id", "seconds", "artist", "title", "path"],
        )


def register(app: typer.Typer) -> None:
    app.command()(add)
    app.command()(remove)
    app.command()(tracks)
