"""Statements behind ``tagstore export``: every score of a set of tracks, and writing rows as Parquet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tagstore.catalogue import Connection


def track_scores(con: Connection, ids: Sequence[int]) -> list[tuple[int, str, str, float, bool]]:
    """``(track id, tag name, kind, score, predicted)`` of the given tracks, by track id then tag kind and name."""
    return con.execute(
        """SELECT s.track_id, g.name, g.kind, s.score, s.predicted FROM tag_scores s JOIN tags g ON g.id = s.tag_id
           WHERE s.track_id IN (SELECT unnest(?::BIGINT[])) ORDER BY s.track_id, g.kind DESC, g.name""",
        [[int(i) for i in ids]],
    ).fetchall()


def tag_names(con: Connection) -> list[tuple[str, str]]:
    """``(name, kind)`` of every tag, learned first, then by name (the order of the score columns)."""
    return con.execute("SELECT name, kind FROM tags ORDER BY kind DESC, name").fetchall()


def write_parquet(columns: Mapping[str, Any], types: Mapping[str, str], path: str) -> None:
    """Write equal-length numpy columns (object arrays for text and lists) as a Parquet file at ``path``,
    each cast to its DuckDB type in ``types`` (e.g. ``VARCHAR[]``, ``FLOAT[]``), through an in-memory DuckDB."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("export_rows", dict(columns))
        select = ", ".join(f'CAST("{name}" AS {types[name]}) AS "{name}"' for name in columns)
        escaped = path.replace("'", "''")
        con.execute(f"COPY (SELECT {select} FROM export_rows) TO '{escaped}' (FORMAT parquet)")
    finally:
        con.close()
