"""`tagstore check [--repair]` and `tagstore backup DEST`."""

from __future__ import annotations

from pathlib import Path

import typer

from tagstore.cli import common


def check(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed from the catalogue, then check again."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the catalogue, the index and the caches; exit 1 when a problem remains."""
    from tagstore import api

    s = common.settings()
    report = api.check(s.store, repair=repair, runtime=common.runtime(s))
    if json_out:
        common.echo_json(report.to_dict())
    else:
        for line in report.repaired:
            typer.echo(f"repaired: {line}", err=True)
        for p in report.problems:
            typer.echo(f"{p.kind}: {p.message}" + ("" if p.fixable or repair else " (not fixable by --repair)"))
        if report.healthy:
            counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
            typer.echo(f"store {report.store} is healthy ({counts})")
        elif not repair and any(p.fixable for p in report.problems):
            typer.echo("run `tagstore check --repair` to fix what can be fixed", err=True)
    if not report.healthy:
        raise typer.Exit(1)


def backup(dest: Path = typer.Argument(..., help="A new (or empty) folder for the copy.")) -> None:
    """Copy the store's catalogue, consistent and checked, into a new store folder."""
    from tagstore import api

    with common.open_store() as store:
        done = api.backup(store, dest)
    counts = done["counts"]
    typer.echo(f"backed up {counts['tracks']} tracks and {counts['tags']} tags to {done['dest']} "
               f"({done['bytes'] / 1e6:.1f} MB); restore with `tagstore --store {done['dest']} ...`")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(backup)
