"""Records of the derived files: index versions (a row each) and the vector matrix (a ``meta`` entry).

:class:`IndexRecord` has the fields :func:`tagstore.indexes.load` checks (checksum, size, mtime_ns,
count, dim), so the index backend accepts it as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagstore.catalogue import Connection, get_meta, set_meta

_COLUMNS = (
    "version", "file", "factory", "metric", "dim", "count", "checksum", "size_bytes", "mtime_ns",
    "layout_digest", "generation", "stats_count", "stats_mean", "stats_std", "params", "built_at",
)  # fmt: skip
MATRIX_KEY = "vector_cache"
LOOKUP_KEY = "id_lookup"
REBUILD_FLAG = "index_needs_rebuild"


@dataclass(frozen=True)
class IndexRecord:
    """One built index file: what built it (factory, layout, generation, statistics) and how to check it.

    ``size`` in bytes, ``mtime_ns`` the file's after the rename, ``stats_mean``/``stats_std`` ``(dim,)``
    float32 catalogue statistics the vectors were standardised with (None: plain per-block L2).
    """

    version: int
    file: str
    factory: str
    metric: str
    dim: int
    count: int
    checksum: str
    size: int
    mtime_ns: int
    layout_digest: str
    generation: int
    stats_count: int
    stats_mean: np.ndarray | None = field(repr=False)
    stats_std: np.ndarray | None = field(repr=False)
    params: dict[str, Any]
    built_at: str


@dataclass(frozen=True)
class NewIndex:
    """An index file just written, to be recorded and made active."""

    file: str
    factory: str
    dim: int
    count: int
    checksum: str
    size: int
    mtime_ns: int
    layout_digest: str
    generation: int
    stats_count: int
    stats_mean: np.ndarray | None
    stats_std: np.ndarray | None
    params: dict[str, Any]


def active_index(con: Connection) -> IndexRecord | None:
    """The active index record, or None."""
    row = con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM index_versions WHERE active ORDER BY version DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    rec = dict(zip(_COLUMNS, row))
    for key in ("stats_mean", "stats_std"):
        rec[key] = np.frombuffer(rec[key], dtype=np.float32).copy() if rec[key] is not None else None
    rec["params"] = json.loads(rec["params"])
    rec["size"] = rec.pop("size_bytes")
    rec["built_at"] = str(rec["built_at"])
    return IndexRecord(**rec)


def activate_index(con: Connection, new: NewIndex) -> IndexRecord:
    """Record ``new`` as the one active index (in the caller's transaction); returns its record."""
    con.execute("UPDATE index_versions SET active = false WHERE active")
    con.execute(
        """INSERT INTO index_versions (file, factory, metric, dim, count, checksum, size_bytes, mtime_ns,
               layout_digest, generation, stats_count, stats_mean, stats_std, params, active)
           VALUES (?, ?, 'ip', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, true)""",
        [
            new.file, new.factory, new.dim, new.count, new.checksum, new.size, new.mtime_ns, new.layout_digest,
            new.generation, new.stats_count, None if new.stats_mean is None else new.stats_mean.tobytes(),
            None if new.stats_std is None else new.stats_std.tobytes(), json.dumps(new.params),
        ],
    )  # fmt: skip
    record = active_index(con)
    assert record is not None  # just inserted in this transaction
    return record


def needs_rebuild(con: Connection) -> bool:
    """Whether tracks changed in place since the last full build (an incremental update will not do)."""
    return get_meta(con, REBUILD_FLAG, "0") == "1"


def clear_rebuild_flag(con: Connection) -> None:
    set_meta(con, REBUILD_FLAG, "0")


def matrix_record(con: Connection) -> dict[str, Any] | None:
    """The vector matrix's record (files, their stat, generation, layout digest), or None."""
    text = get_meta(con, MATRIX_KEY)
    return json.loads(text) if text else None


def set_matrix_record(con: Connection, record: dict[str, Any]) -> None:
    set_meta(con, MATRIX_KEY, json.dumps(record))


def lookup_record(con: Connection) -> dict[str, Any] | None:
    """The id lookup's record (files, their stat, generation, count), or None."""
    text = get_meta(con, LOOKUP_KEY)
    return json.loads(text) if text else None


def set_lookup_record(con: Connection, record: dict[str, Any]) -> None:
    set_meta(con, LOOKUP_KEY, json.dumps(record))
