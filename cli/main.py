"""The `tagstore` command: a thin view of the library. Errors become messages here, and only here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from tagstore.cli import common, evaluate, query, serve, store_cmds, tags, tracks


class _Group(TyperGroup):
    """Turns library errors into one line on stderr and exit status 1, for every command."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        from tagstore.errors import TagstoreError

        try:
            return super().invoke(ctx)
        except TagstoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="tagstore",
    cls=_Group,
    help="Tag and search music collections with learned audio embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich markdown rendering costs ~0.1 s per `--help`
)


@app.callback()
def _global(
    store: Optional[Path] = typer.Option(
        None,
        "--store",
        "-s",
        help=f"Store folder (else ${common.STORE_ENV}, then `store` in the config file, then a per-user data folder).",
        show_default=False,
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr."),
    no_server: bool = typer.Option(False, "--no-server", help="Open the store directly even when `tagstore serve` runs for it."),
) -> None:
    common.State.store = store
    common.State.quiet = quiet
    common.State.no_server = no_server
    log = logging.getLogger("tagstore")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


store_cmds.register(app)
tracks.register(app)
query.register(app)
tags.register(app)
evaluate.register(app)
serve.register(app)


def _register_models() -> None:
    try:
        from tagstore.cli import models
    except ImportError:  # the models command group arrives with the pre-trained backends
        return
    app.add_typer(models.app, name="models")


_register_models()


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not common.State.quiet or record.levelno >= logging.ERROR:
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")


def main() -> None:
    """Entry point: exit 0 on success, 1 on a user error (one line, no traceback), 2 on usage errors."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: work committed so far is kept; run the command again to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
