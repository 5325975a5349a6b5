"""`tagstore add`, `tagstore remove`, `tagstore tracks`."""

from __future__ import annotations

from typing import Optional

import typer

from tagstore.cli import common


def add(
    paths: list[str] = typer.Argument(..., help="Audio files or folders (walked recursively)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be added; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Tracks committed per transaction."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS|local", help="Embed on Ray Data: 'local' starts Ray here, else a Ray address (auto, ray://head:10001); needs the `ray` extra."),
    shard_size: int = typer.Option(16, "--shard-size", min=1, help="With --ray: files per shard (what a killed run can lose)."),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", min=1, help="With --ray local: CPUs Ray may use (default all)."),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", min=0, help="Processes decoding ahead of the embedder (default: 2 with a CUDA embedder, else 0)."),
) -> None:
    """Add audio files to the store; already stored files are skipped, bad files reported."""
    from tagstore import api

    bar = common.ProgressBar("embedding on Ray" if ray else "adding", verb="added")
    with common.open_store() as store:
        before = api.info(store)["counts"]["tracks"]
        common.on_interrupt(lambda: _committed(before))
        try:
            report = api.add(store, paths, dry_run=dry_run, progress=bar, batch_tracks=batch_size, ray=ray,
                             files_per_shard=shard_size, ray_cpus=ray_cpus, decode_workers=decode_workers)  # fmt: skip
        finally:
            bar.close()
    if json_out:
        common.echo_json(report.to_dict())
    elif dry_run:
        for item in report.added:
            typer.echo(f"would add     {item['path']}")
        for item in report.updated:
            typer.echo(f"would update  {item['path']} (id {item['id']}, content changed)")
        for item in report.moved:
            typer.echo(f"would move    {item['id']}: {item['old_path']} → {item['path']}")
        for item in report.skipped:
            typer.echo(f"would skip    {item['path']} ({item['reason']})")
        for item in report.failed:
            typer.echo(f"cannot read   {item['path']} ({item['reason']})")
    else:
        speed = report.audio_seconds / report.seconds if report.seconds else 0.0
        for item in report.moved:
            common.info(f"moved {item['id']}: {item['old_path']} → {item['path']} (same content; id, tags and examples kept)")
        common.info(
            f"added {len(report.added)}, updated {len(report.updated)}, moved {len(report.moved)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)} in {report.seconds:.1f} s ({speed:.0f}x real time)"
        )
        for item in report.failed:
            typer.echo(f"failed: {item['reason']}", err=True)
    if report.failed:
        raise typer.Exit(1)


def _committed(before: int) -> str:
    from tagstore import api

    with common.open_store() as store:
        now = api.info(store)["counts"]["tracks"]
    return (f"{now - before} new tracks were committed (whole batches; the store has {now}); "
            "run the same command again to add the rest")


def remove(
    tracks: list[str] = typer.Argument(..., help="Catalogue ids or stored paths."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be removed; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the removed tracks as JSON."),
) -> None:
    """Remove tracks with their embeddings, tag examples and scores (audio files are not touched)."""
    from tagstore import api

    with common.open_store() as store:
        report = api.remove(store, tracks, dry_run=dry_run)
    if json_out:
        common.echo_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for t in report.tracks:
        typer.echo(f"{verb} {t.id}\t{t.path}")
    for name in report.refitted:
        common.info(f"{'would refit' if dry_run else 'refitted'} tag {name!r}: it lost an example")


TRACK_COLUMNS = ["id", "path", "content_hash", "size_bytes", "duration_s", "sample_rate", "channels", "format",
                 "title", "artist", "album", "genre", "added_at"]  # fmt: skip
FAILURE_COLUMNS = ["path", "error", "reason", "failed_at"]


def tracks(
    match: Optional[str] = typer.Argument(None, help="Case-insensitive text to find in path, title or artist."),
    artist: Optional[str] = typer.Option(None, help="Filter by artist (substring)."),
    album: Optional[str] = typer.Option(None, help="Filter by album (substring)."),
    genre: Optional[str] = typer.Option(None, help="Filter by genre (substring)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", help="At most this many tracks."),
    failed: bool = typer.Option(False, "--failed", help="List files that failed to ingest instead."),
    missing: bool = typer.Option(False, "--missing", help="Only tracks whose file is gone (see `tagstore update`)."),
    json_out: bool = common.JSON,
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
    m3u: bool = common.M3U,
) -> None:
    """List the tracks in the store (titles fall back to the file name)."""
    from tagstore import api

    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out, m3u=m3u)
    if failed and missing:
        raise typer.BadParameter("--failed and --missing list different things; give one")
    with common.open_store() as store:
        if failed:
            rows = api.failures(store)
            common.emit(rows, fmt, FAILURE_COLUMNS, [(r["path"], r["error"], r["reason"]) for r in rows],
                        ["path", "error", "reason"])  # fmt: skip
            return
        found = api.missing(store) if missing else api.tracks(store, match=match, artist=artist, album=album,
                                                                  genre=genre, limit=limit)  # fmt: skip
    if fmt == "m3u":
        common.m3u((t.path, t.duration_s, t.artist, t.title) for t in found)
        return
    common.emit([t.to_dict() for t in found], fmt, TRACK_COLUMNS,
                [(t.id, f"{t.duration_s:.1f}", t.artist, common.title_of(t.title, t.path), t.path) for t in found],
                ["id", "seconds", "artist", "title", "path"])  # fmt: skip


def track(
    ref: str = typer.Argument(..., metavar="ID|PATH", help="A catalogue id or a stored path."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One track: its file metadata and every tag it has a score for (model and learned, score, decision)."""
    from tagstore import api

    with common.open_store() as store:
        data = api.show_track(store, ref)
    if json_out:
        common.echo_json(data)
        return
    fields = [("id", data["id"]), ("path", data["path"] + ("" if data["exists"] else "  (missing)")),
              ("title", common.title_of(data["title"], data["path"])), ("artist", data["artist"]),
              ("album", data["album"]), ("genre", data["genre"]), ("duration", f"{data['duration_s']:.1f} s"),
              ("format", f"{data['format']}, {data['sample_rate']} Hz, {data['channels']} ch"),
              ("size", f"{data['size_bytes']} bytes"), ("added", data["added_at"])]  # fmt: skip
    for key, value in fields:
        typer.echo(f"{key:<10}{'' if value is None else value}")
    typer.echo("")
    common.table([(t["name"], t["kind"], t["score"], t["threshold"], "yes" if t["predicted"] else "", t["example"])
                  for t in data["tags"]], ["tag", "kind", "score", "threshold", "tagged", "example"])  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(add)
    app.command()(remove)
    app.command()(tracks)
    app.command()(track)
