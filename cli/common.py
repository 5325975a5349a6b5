"""Shared CLI plumbing: where the store is, how data and progress are printed."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import typer

from tagstore import config

STORE_ENV = config.STORE_ENV


class State:
    """Global options, set by the app callback."""

    store: Path | None = None
    quiet: bool = False
    no_server: bool = False


def settings() -> config.Settings:
    """This command's settings: flag > environment > config file > default (:class:`tagstore.config.Settings`)."""
    return config.Settings.resolve({"store": State.store})


def resolve_store(flag: Path | None) -> Path:
    """The store folder, in this order: --store > $TAGSTORE_STORE > config file `store = ...` > default."""
    return config.Settings.resolve({"store": flag}).store


def store_path() -> Path:
    return settings().store


def runtime(s: config.Settings | None = None) -> dict[str, Any]:
    """What building embedders needs from the settings."""
    s = s or settings()
    return {"weights_dir": str(s.weights_dir), "threads": s.threads}


@contextlib.contextmanager
def open_store() -> Iterator[Any]:
    """The store for this command, its cached connection closed when the command ends."""
    from tagstore import api

    s = settings()
    store = api.open(s.store, runtime=runtime(s))
    try:
        with store.session():
            yield store
    finally:
        store.close()


def via_server(method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any | None:
    """The answer of the store's running server (``tagstore serve``), or None when there is none to use
    (``--no-server``, no server recorded, its process or port gone, another store): the caller then
    opens the store itself. Errors the server reports for the request are raised as the library's."""
    if State.no_server:
        return None
    from tagstore.server import client

    found = client.connect(store_path())
    if found is None:
        return None
    try:
        return found.request(method, path, params, body)
    except client.ServerGone:
        return None


def local_ref(ref: str) -> str:
    """A track reference as the server must see it: a file that exists here becomes its absolute path
    (the server's working folder is not this one); ids and stored paths pass unchanged."""
    text = ref.strip()
    if text.isascii() and text.isdigit():
        return ref
    path = Path(text).expanduser()
    return str(path.absolute()) if path.exists() else ref


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def info(message: str) -> None:
    """A log line on stderr (suppressed by --quiet)."""
    if not State.quiet:
        typer.echo(message, err=True)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table on stdout; the last column is not padded."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *cells]
    for line in lines:
        parts = [str(v).ljust(widths[i]) if i < len(line) - 1 else str(v) for i, v in enumerate(line)]
        typer.echo("  ".join(parts).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def m3u(entries: Iterable[tuple[str, float | None, str]]) -> None:
    """An extended M3U playlist on stdout: ``(path, duration_s, label)`` per entry."""
    typer.echo("#EXTM3U")
    for path, duration, label in entries:
        typer.echo(f"#EXTINF:{int(round(duration)) if duration else -1},{label}")
        typer.echo(path)


class ProgressBar:
    """A one-line progress bar on stderr, drawn only on a terminal and at most 10 times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() and not State.quiet
        self.last = 0.0
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, item: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        width = 30
        filled = int(width * done / total) if total else width
        name = os.path.basename(item)[-40:]
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{now - self.t0:5.0f}s {name:<40}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
