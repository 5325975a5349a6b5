"""Statements on embedding shards: Parquet files of tracks and their embeddings, read and written in bulk.

A shard (see :mod:`tagstore.bulk`) is read with DuckDB's ``read_parquet`` on a connection of its own
(:func:`reader`, in memory), so reading shards never holds the catalogue open; importing their rows uses
the ordinary statements of :mod:`.tracks` and :mod:`.tags`. Export reads the catalogue here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tagstore.catalogue import Connection

CHUNK = 1024
"""Rows fetched at a time."""


def reader() -> Connection:
    """An in-memory DuckDB connection for reading shard files."""
    import duckdb

    return duckdb.connect(":memory:")


def _files(files: Sequence[Path]) -> list[str]:
    return [str(f) for f in files]


def keys(con: Connection, files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """``(path, size in bytes, mtime in ns)`` of every row of the shards: what a resumed run need not embed again."""
    if not files:
        return []
    return con.execute(
        "SELECT path, size_bytes, mtime_ns FROM read_parquet(?::VARCHAR[], union_by_name = true)", [_files(files)]
    ).fetchall()


def rows(con: Connection, files: Sequence[Path], chunk: int = CHUNK) -> Iterator[Any]:
    """Every row of the shards as ``pyarrow.RecordBatch`` es of up to ``chunk`` rows, ordered by
    ``position`` (the file's place in its run), then path: the order a plain ``add`` commits them in."""
    if not files:
        return iter(())
    relation = con.sql(
        "SELECT * FROM read_parquet(?::VARCHAR[], union_by_name = true) ORDER BY position, path", params=[_files(files)]
    )
    return iter(relation.to_arrow_reader(chunk))


# --- export: the catalogue's tracks and embeddings ------------------------------------------------


def export_batches(con: Connection, chunk: int = CHUNK) -> Iterator[Any]:
    """Every track with an embedding, by id, as ``pyarrow.RecordBatch`` es: the shard columns (``position`` =
    the track id, ``embedding`` as the raw float32 BLOB)."""
    relation = con.sql(
        """SELECT t.id AS position, t.path, t.content_hash, t.size_bytes, t.mtime_ns, t.duration_s,
                  t.sample_rate, t.channels, t.format, t.title, t.artist, t.album, t.genre, e.vector AS embedding
           FROM tracks t JOIN embeddings e ON e.track_id = t.id ORDER BY t.id"""
    )
    return iter(relation.to_arrow_reader(chunk))


def model_tags(con: Connection) -> dict[str, list[tuple[int, str]]]:
    """Model tags by source (embedder name): ``[(tag id, name)]`` in creation order (the model's own order)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for tag_id, name, source in con.execute(
        "SELECT id, name, source FROM tags WHERE kind = 'model' ORDER BY id"
    ).fetchall():
        out.setdefault(source, []).append((int(tag_id), name))
    return out


def model_scores(con: Connection, track_ids: Sequence[int], tag_ids: Sequence[int]) -> list[tuple[int, int, float]]:
    """``(track id, tag id, score)`` of the given model tags for the given tracks."""
    if not track_ids or not tag_ids:
        return []
    return con.execute(
        """SELECT track_id, tag_id, score FROM tag_scores
           WHERE track_id IN (SELECT unnest(?::BIGINT[])) AND tag_id IN (SELECT unnest(?::BIGINT[]))""",
        [[int(i) for i in track_ids], [int(i) for i in tag_ids]],
    ).fetchall()
