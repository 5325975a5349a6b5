"""The catalogue out to files (``tagstore export``): one row per track as CSV, JSON, NDJSON or Parquet.

Every format has the same columns: the track's catalogue fields (the file's path, tags read at ingest,
duration in seconds, rate in Hz, size in bytes), ``tags`` and ``model_tags`` (the learned and model tags
predicted for it, best first), and one ``score:<tag>`` column per tag (its score; empty where unscored).
Parquet can also carry each track's raw ``embedding`` (FLOAT[] of the store's layout dimension). Lists
are ``;``-joined in CSV. Files are written atomically (:func:`tagstore.fileio.atomic_write`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import fileio
from tagstore.catalogue import exports as export_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.errors import InputError
from tagstore.store import Store

FORMATS = ("csv", "json", "nl", "parquet")
TRACK_FIELDS: dict[str, str] = {
    "id": "BIGINT", "path": "VARCHAR", "title": "VARCHAR", "artist": "VARCHAR", "album": "VARCHAR",
    "genre": "VARCHAR", "duration_s": "DOUBLE", "sample_rate": "BIGINT", "channels": "BIGINT", "format": "VARCHAR",
    "size_bytes": "BIGINT", "content_hash": "VARCHAR", "added_at": "VARCHAR",
}  # fmt: skip
LIST_SEPARATOR = ";"


@dataclass
class Export:
    """Rows ready to write: ``columns`` in order, their DuckDB ``types``, and one dict per track."""

    columns: list[str]
    types: dict[str, str]
    rows: list[dict[str, Any]]


def collect(
    store: Store, match: str | None = None, artist: str | None = None, album: str | None = None,
    genre: str | None = None, limit: int | None = None, embeddings: bool = False,
) -> Export:  # fmt: skip
    """One row per track (filtered like ``tagstore tracks``) with its tags, scores and optionally its embedding."""
    tracks = store.tracks(match=match, artist=artist, album=album, genre=genre, limit=limit)
    ids = [t.id for t in tracks]
    with store.reader() as con:
        names = export_sql.tag_names(con)
        scores = export_sql.track_scores(con, ids) if ids else []
        vectors = track_sql.embeddings(con, ids, store.layout.dim) if embeddings and ids else None
    types = dict(TRACK_FIELDS)
    types.update({"tags": "VARCHAR[]", "model_tags": "VARCHAR[]"})
    types.update({f"score:{name}": "DOUBLE" for name, _ in names})
    if embeddings:
        types["embedding"] = "FLOAT[]"
    rows = []
    by_track: dict[int, list[tuple[str, str, float, bool]]] = {}
    for tid, name, kind, score, predicted in scores:
        by_track.setdefault(tid, []).append((name, kind, float(score), bool(predicted)))
    for i, t in enumerate(tracks):
        row: dict[str, Any] = {k: getattr(t, k) for k in TRACK_FIELDS}
        mine = by_track.get(t.id, [])
        for kind, col in (("learned", "tags"), ("model", "model_tags")):
            row[col] = [n for n, k, _, p in sorted(mine, key=lambda m: -m[2]) if k == kind and p]
        row.update({f"score:{name}": None for name, _ in names})
        row.update({f"score:{n}": s for n, _, s, _ in mine})
        if vectors is not None:
            row["embedding"] = vectors[i].tolist()
        rows.append(row)
    return Export(list(types), types, rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return LIST_SEPARATOR.join(str(v) for v in value)
    return value


def render(data: Export, fmt: str) -> str:
    """The rows as text: ``csv``, ``json`` (one array) or ``nl`` (one object per line)."""
    if fmt == "json":
        return json.dumps(data.rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "nl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data.rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(data.columns)
        writer.writerows([[_cell(r[c]) for c in data.columns] for r in data.rows])
        return out.getvalue()
    raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _columns(data: Export) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for col in data.columns:
        values = [r[col] for r in data.rows]
        if data.types[col].endswith("[]"):
            arr = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                arr[i] = list(v)
            out[col] = arr
        elif data.types[col] == "VARCHAR":
            out[col] = np.array(values, dtype=object)
        elif data.types[col] == "BIGINT":
            out[col] = np.array(values, dtype=np.int64)
        else:
            out[col] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def write(data: Export, fmt: str, path: str | os.PathLike[str]) -> fileio.Written:
    """Write the rows to ``path`` in format ``fmt``, atomically."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise InputError(f"no folder {target.parent} to write {target.name} into; create it or choose another -o")
    if fmt != "parquet":
        return fileio.atomic_write(target, render(data, fmt))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tagstore-export-") as tmp:
        part = os.path.join(tmp, "rows.parquet")
        export_sql.write_parquet(_columns(data), data.types, part)
        return fileio.atomic_write(target, Path(part).read_bytes())


def check_format(fmt: str, embeddings: bool, to_file: bool) -> None:
    """Refuse a format that cannot be written where asked, before any work."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and not to_file:
        raise InputError("Parquet is binary; give a file with -o FILE.parquet")
    if embeddings and fmt not in ("parquet", "json", "nl"):
        raise InputError("--embeddings needs --format parquet, json or nl (CSV has no list cells)")


def export(
    store: Store, fmt: str = "csv", path: str | os.PathLike[str] | None = None, embeddings: bool = False,
    **filters: Any,
) -> tuple[Export, str | None]:  # fmt: skip
    """Collect the rows and write them to ``path`` (returns ``(rows, None)``), or render them as text."""
    check_format(fmt, embeddings, path is not None)
    data = collect(store, embeddings=embeddings, **filters)
    if path is not None:
        write(data, fmt, path)
        return data, None
    return data, render(data, fmt)

