"""`tagstore write` (tags into the audio files, `--undo`) and `tagstore update` (follow moved, changed, deleted files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tagstore.cli import common


def _values(values: list[str] | None) -> str:
    return "(none)" if values is None else "; ".join(values) or '""'


def write(
    tracks: Optional[list[str]] = typer.Argument(None, help="Only these tracks: catalogue ids or stored paths (default: all)."),
    source: Optional[str] = typer.Option(None, "--source", help="Which tags: learned (predicted), model (above their threshold) or both (default: config `write_source`, else learned)."),
    field: Optional[str] = typer.Option(None, "--field", "-f", help="The tag field to write, e.g. GENRE or MOOD (default: config `write_field`, else TAGSTORE)."),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Only this tag, learned or model (repeatable)."),
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Only tags scoring at least this (default: config `min_score`, else any predicted)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print 'file: existing → proposed' and change nothing."),
    undo: bool = typer.Option(False, "--undo", help="Restore the values the latest write run replaced."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write predicted tags into the audio files (ID3 TXXX, Vorbis comments, MP4 freeform, APEv2); only the chosen field is touched, and every write is logged for --undo."""
    from tagstore import api

    s = common.settings()
    if undo and (tracks or source or field or tag or min_score is not None):
        raise typer.BadParameter("--undo restores the latest write run as a whole; give it alone (or with --dry-run)")
    bar = common.ProgressBar("restoring" if undo else "writing", verb="restored" if undo else "written")
    common.on_interrupt(lambda: "every file written so far is in the write log; `tagstore write --undo` restores them")
    with common.open_store() as store:
        try:
            if undo:
                report = api.undo_write(store, dry_run=dry_run, progress=bar)
            else:
                report = api.write(store, source=source or s.write_source, field=field or s.write_field,
                                   tags=tag or None, min_score=s.min_score if min_score is None else min_score,
                                   tracks=tracks or None, dry_run=dry_run, progress=bar)  # fmt: skip
        finally:
            bar.close()
    if json_out:
        common.echo_json(report.to_dict())
    else:
        for item in report.written:
            typer.echo(f"{item['path']}: {_values(item['old'])} → {_values(item['new'])}")
        for item in report.failed:
            typer.echo(f"failed: {item['path']}: {item['reason']}", err=True)
        verb = ("would restore" if dry_run else "restored") if undo else ("would write" if dry_run else "wrote")
        common.info(f"{verb} {report.field} in {len(report.written)} files, {len(report.unchanged)} unchanged, "
                    f"{len(report.failed)} failed" + (f" (write run {report.run})" if report.run and not dry_run else ""))  # fmt: skip
    if report.failed:
        raise typer.Exit(1)


def update(
    paths: Optional[list[Path]] = typer.Argument(None, help="Folders to check and to look for moved files in (default: the folders of the stored tracks)."),
    prune: bool = typer.Option(False, "--prune", help="Remove tracks whose file is gone (tags that lose an example are refitted)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would change; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Follow the files: moved files keep their id, tags and examples; changed files are re-embedded; deleted files are listed (removed with --prune)."""
    from tagstore import api

    bar = common.ProgressBar("checking", verb="checked")
    with common.open_store() as store:
        try:
            report = api.update(store, paths or None, prune=prune, dry_run=dry_run, progress=bar)
        finally:
            bar.close()
    if json_out:
        common.echo_json(report.to_dict())
        return
    would = "would " if dry_run else ""
    for item in report.moved:
        typer.echo(f"{would}move    {item['id']}: {item['old_path']} → {item['path']}")
    for item in report.changed:
        typer.echo(f"{would}re-embed {item['id']}: {item['path']}")
    for item in report.missing:
        verb = f"{would}remove  " if prune else "missing "
        typer.echo(f"{verb}{item['id']}: {item['path']}")
    for name in report.refitted:
        typer.echo(f"refitted tag {name!r} (it lost examples)")
    for item in report.failed:
        typer.echo(f"failed: {item['path']}: {item['reason']}", err=True)
    hint = "" if prune or not report.missing else "; `tagstore update --prune` removes the missing"
    common.info(_summary(report) + hint)
    if report.failed:
        raise typer.Exit(1)


def _summary(report: Any) -> str:
    return (f"{len(report.moved)} moved, {len(report.changed)} changed, {len(report.missing)} missing"
            f"{' (removed)' if report.pruned else ''}, {report.unchanged} unchanged, {len(report.new)} new files not in the store")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(write)
    app.command()(update)
