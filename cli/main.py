"""The `tagstore` command: a thin view of the library. Errors become messages here, and only here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from tagstore.cli import bulk, common, config_cmd, evaluate, exchange, files, maintenance, query, serve, store_cmds, tags, tracks


try:
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - a typer that uses click itself
    from click.exceptions import UsageError


class _Group(TyperGroup):
    """Turns library errors into one line on stderr and exit status 1, and a command's usage errors (a value
    that is not a number, a missing argument) into one line and exit status 2, for every command."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        from tagstore.errors import TagstoreError

        try:
            return super().invoke(ctx)
        except TagstoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" or exc.ctx is None:
                raise  # `tagstore query` alone prints its help
            message = " ".join(exc.format_message().split()).rstrip(".")
            typer.echo(f"error: {message}; see `{exc.ctx.command_path} --help`", err=True)
            raise typer.Exit(2) from None


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
    show_completion: Optional[str] = typer.Option(
        None, "--show-completion", metavar="SHELL", is_eager=True, expose_value=False,
        callback=lambda ctx, value: _completion(ctx, value, install=False),
        help="Print the completion script for SHELL (bash, zsh, fish, powershell) and exit.",
    ),
    install_completion: Optional[str] = typer.Option(
        None, "--install-completion", metavar="SHELL", is_eager=True, expose_value=False,
        callback=lambda ctx, value: _completion(ctx, value, install=True),
        help="Install completion for SHELL (bash, zsh, fish, powershell) in its startup file and exit.",
    ),
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


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
COMPLETE_VAR = "_TAGSTORE_COMPLETE"


def _completion(ctx: typer.Context, value: Optional[str], install: bool) -> None:
    """--show-completion / --install-completion SHELL: the shell is named, never detected (works in any
    environment: scripts, containers, CI)."""
    if value is None or ctx.resilient_parsing:
        return
    shell = value.strip().lower()
    if shell not in SHELLS:
        raise typer.BadParameter(f"shell {value!r} has no completion; name one of {', '.join(SHELLS[:4])}, e.g. --show-completion bash")
    from typer._completion_shared import get_completion_script
    from typer._completion_shared import install as install_script

    if install:
        shell, path = install_script(shell=shell, prog_name="tagstore", complete_var=COMPLETE_VAR)
        typer.echo(f"{shell} completion installed in {path}; it takes effect in a new shell")
    else:
        typer.echo(get_completion_script(prog_name="tagstore", complete_var=COMPLETE_VAR, shell=shell))
    raise typer.Exit(0)


store_cmds.register(app)
tracks.register(app)
query.register(app)
tags.register(app)
evaluate.register(app)
bulk.register(app)
files.register(app)
exchange.register(app)
config_cmd.register(app)
maintenance.register(app)
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
    import os

    if os.environ.get(COMPLETE_VAR):  # a completion request from the shell: typer's completion classes answer
        from typer.completion import completion_init

        completion_init()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo(common.interrupted_message(), err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
