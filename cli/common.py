"""Shared CLI plumbing: where the store is, how data and progress are printed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    return {"weights_dir": str(s.weights_dir), "threads": s.threads, "search_device": s.search_device}


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
    try:
        return str(path.absolute()) if path.exists() else ref
    except (OSError, ValueError):  # a name too long, a NUL: not a file here; the store says what it is
        return ref


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


def title_of(title: str | None, path: str | None) -> str:
    """A track's title, else its file name without the extension (what players show for untagged files)."""
    if title:
        return title
    return os.path.splitext(os.path.basename(path or ""))[0]


def m3u(entries: Iterable[tuple[str, float | None, str | None, str | None]]) -> None:
    """An extended M3U playlist on stdout: ``(path, duration_s, artist, title)`` per entry, each titled
    ``#EXTINF:<seconds>,<artist> - <title>`` (the file name when it has no title; -1: unknown duration)."""
    typer.echo("#EXTM3U")
    for path, duration, artist, title in entries:
        name = title_of(title, path)
        label = f"{artist} - {name}" if artist else name
        typer.echo(f"#EXTINF:{int(round(duration)) if duration else -1},{label}")
        typer.echo(path)


# --- listings: one set of formats for every listing command ------------------------------------------

JSON = typer.Option(False, "--json", help="Print JSON.")
NL = typer.Option(False, "--nl", help="Print newline-delimited JSON (one object per line).")
CSV = typer.Option(False, "--csv", help="Print CSV (the JSON's columns; lists joined by ';').")
TSV = typer.Option(False, "--tsv", help="Print tab-separated values (the JSON's columns).")
M3U = typer.Option(False, "--m3u", help="Print an M3U playlist.")


def output_format(**flags: bool) -> str | None:
    """The one format asked for (``json``, ``nl``, ``csv``, ``tsv``, ``m3u``), None for a table; a usage
    error (exit 2) when more than one is given."""
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise typer.BadParameter(
            f"{' and '.join('--' + c for c in chosen)} cannot be combined; choose one output format"
        )
    return chosen[0] if chosen else None


def _flat(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: str | None,
    columns: Sequence[str],
    table_rows: Iterable[Sequence[Any]] | None = None,
    headers: Sequence[str] | None = None,
    json_data: Any = None,
) -> None:
    """Print a listing: ``rows`` (dicts with keys ``columns``) as JSON / NDJSON / CSV / TSV, else the table
    ``table_rows`` under ``headers`` (on a terminal). ``json_data``: what ``--json`` prints, when not ``rows``."""
    if fmt == "json":
        echo_json(list(rows) if json_data is None else json_data)
    elif fmt == "nl":
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False, default=str))
    elif fmt in ("csv", "tsv"):
        import csv

        out = io.StringIO()
        writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_flat(row.get(c)) for c in columns])
        typer.echo(out.getvalue(), nl=False)
    else:
        table([list(r) for r in (table_rows or [])], headers or columns)


LOG_EVERY_S = 10.0
"""Off a terminal, progress is a log line on stderr at most this often."""


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{round(s / 60)}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class ProgressBar:
    """Progress on stderr: a one-line bar on a terminal (at most 10 redraws a second), else a log line such
    as ``added 120/964, ETA 3m`` every :data:`LOG_EVERY_S` seconds (for logs and CI); none with --quiet."""

    def __init__(self, label: str, verb: str | None = None, every_s: float | None = None) -> None:
        self.label = label
        self.verb = verb or label
        self.tty = sys.stderr.isatty()
        self.enabled = not State.quiet
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.last = 0.0
        self.t0 = time.monotonic()
        self.started_at: tuple[float, int] | None = None  # (time, done) of the first call: the ETA's base
        self.drawn = False

    def __call__(self, done: int, total: int, item: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = (now, done)
        if not self.tty:
            self._log(now, done, total)
            return
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        self.drawn = True
        width = 30
        filled = int(width * done / total) if total else width
        name = os.path.basename(item)[-40:]
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{now - self.t0:5.0f}s {name:<40}"
        )
        sys.stderr.flush()

    def _log(self, now: float, done: int, total: int) -> None:
        if done == 0 or done >= total or now - self.last < self.every_s:
            return
        self.last = now
        t_base, done_base = self.started_at or (self.t0, 0)
        rate = (done - done_base) / (now - t_base) if now > t_base and done > done_base else 0.0
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 else ""
        sys.stderr.write(f"{self.verb} {done}/{total}{eta}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Interrupted:
    """What a long command has committed so far, for the message an interrupt (Ctrl-C) prints."""

    describe: Callable[[], str] | None = None


def on_interrupt(describe: Callable[[], str]) -> None:
    """Say what an interrupt of this command kept: ``describe()`` is called after the interrupt, once the
    command's transactions are closed (see :func:`tagstore.cli.main.main`)."""
    Interrupted.describe = describe


def interrupted_message() -> str:
    """The line an interrupted command prints on stderr."""
    text = None
    if Interrupted.describe is not None:
        try:
            text = Interrupted.describe()
        except Exception:  # noqa: BLE001 - the store may be unreadable right now; say the general rule
            text = None
    return "interrupted: " + (text or "work committed so far is kept; run the command again to resume")
