"""`tagstore serve`: a resident server for the store (the CLI uses it while it runs)."""

from __future__ import annotations

import typer

from tagstore.cli import common


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Anything but loopback exposes the store without authentication."),
    port: int = typer.Option(8765, "--port", "-p", help="TCP port (0: any free port; the address file in the store names it)."),
) -> None:
    """Keep the store open and answer its JSON API (OpenAPI page at /docs) until Ctrl-C."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from tagstore.server import run
    except ImportError as exc:  # fastapi / uvicorn are the `server` extra
        from tagstore.errors import MissingDependencyError

        raise MissingDependencyError(f"`tagstore serve` needs {exc.name}; install it with pip install 'tagstore[server]'") from None
    s = common.settings()
    run.serve(s.store, host=host, port=port, runtime=common.runtime(s), say=common.info)


def register(app: typer.Typer) -> None:
    app.command()(serve)
