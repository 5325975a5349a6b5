"""`tagstore models list | fetch | import`: pre-trained model weights in the per-user cache."""

from __future__ import annotations

from pathlib import Path

import typer

from tagstore.cli import common

app = typer.Typer(help="Pre-trained models: list, fetch and import weights.", no_args_is_help=True)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print the models as JSON.")) -> None:
    """Each model: embedding size, input rate, licence and whether its weights are in the cache."""
    from tagstore import api

    infos = api.list_models(common.settings().weights_dir)
    if json_out:
        common.echo_json([m.to_dict() for m in infos])
        return
    rows = []
    for m in infos:
        state = "none needed" if m.source == "built in" else "present" if m.present else ("missing" if m.source else "-")
        if m.present and m.verified is False:
            state = "present (unverified)"
        rows.append([m.name, m.dim, f"{m.sample_rate} Hz" if m.sample_rate else None, m.licence, state])
    common.table(rows, ["name", "dim", "rate", "licence", "weights"])


@app.command("fetch")
def fetch_cmd(name: str = typer.Argument(..., help="Model name, e.g. musicnn.")) -> None:
    """Download a model's published weights, verify their digest and install them in the cache."""
    from tagstore import api

    folder = api.fetch_model(name, progress=common.info, weights_dir=common.settings().weights_dir)
    typer.echo(str(folder))


@app.command("import")
def import_cmd(
    name: str = typer.Argument(..., help="Model name, e.g. musicnn."),
    file: Path = typer.Argument(..., help="A local copy of the published weights file."),
    unverified: bool = typer.Option(
        False, "--unverified", help="Accept a file whose digest differs from the published one."
    ),
) -> None:
    """Install a model's weights from a local file (no network); its digest is verified."""
    from tagstore import api

    folder = api.import_model(name, file, unverified=unverified, progress=common.info, weights_dir=common.settings().weights_dir)
    typer.echo(str(folder))
