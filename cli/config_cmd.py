"""`tagstore config`: where the config file is, the settings in force, and a file naming every key."""

from __future__ import annotations

import typer

from tagstore.cli import common


def config(
    example: bool = typer.Option(False, "--example", help="Print a config file naming every key with its default."),
    json_out: bool = typer.Option(False, "--json", help="Print the settings in force as JSON."),
) -> None:
    """The settings in force (flag > environment > config file > default) and the config file's path."""
    from dataclasses import asdict

    from tagstore import config as cfg

    if example:
        typer.echo(cfg.example_config(), nl=False)
        return
    settings = {k: (str(v) if v is not None and not isinstance(v, (int, float)) else v)
                for k, v in asdict(common.settings()).items()}  # fmt: skip
    path = cfg.config_path()
    if json_out:
        common.echo_json({"config_file": str(path), "exists": path.is_file(), "settings": settings})
        return
    typer.echo(f"config file   {path}{'' if path.is_file() else ' (none)'}")
    for key, value in settings.items():
        typer.echo(f"{key:<14}{'' if value is None else value}")


def register(app: typer.Typer) -> None:
    app.command()(config)
