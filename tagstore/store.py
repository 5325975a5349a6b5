"""The store: a folder holding the DuckDB catalogue and the derived FAISS index files.

``Store`` is the library's front door; every CLI command is one call on it::

    store = Store.init("~/music.tagstore", embedders="dsp")
    report = store.add(["~/Music"])
    hits = store.similar("42", k=10)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.errors import StoreExistsError, StoreNotFoundError, TrackNotFoundError
from tagstore.layout import Layout

Progress = Callable[[int, int, str], None]
"""Progress callback: ``(done, total, current item)``."""

DEFAULT_FACTORY = "Flat"

TRACK_COLUMNS = (
    "id", "path", "content_hash", "size_bytes", "duration_s", "sample_rate", "channels",
    "format", "title", "artist", "album", "genre", "added_at",
)  # fmt: skip


@dataclass
class Track:
    """One catalogue row (duration in seconds, sample rate in Hz, size in bytes)."""

    id: int
    path: str
    content_hash: str
    size_bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    format: str | None
    title: str | None
    artist: str | None
    album: str | None
    genre: str | None
    added_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _track(row: Sequence[Any]) -> Track:
    values = dict(zip(TRACK_COLUMNS, row))
    values["added_at"] = str(values["added_at"])
    return Track(**values)


class Store:
    """A tagstore folder. Construct with :meth:`init` or :meth:`open`."""

    def __init__(self, path: Path, layout: Layout, factory: str, con: Any | None = None) -> None:
        self.path = path
        self.layout = layout
        self.factory = factory
        self._con = con  # read-only connection kept for a session (see :meth:`session`)
        self._sessions = 0
        self._writing = False
        self._loaded_index: tuple[int, Any, Any] | None = None  # (record version, file stat, index): see vectors

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, embedders: str | list[str] = "dsp", factory: str = DEFAULT_FACTORY) -> Store:
        """Create a store folder with an empty catalogue for the given embedder spec(s)."""
        from tagstore import indexes
        from tagstore.embedding import TrackEmbedder

        path = Path(path).expanduser().absolute()
        if cat.catalogue_path(path).exists():
            raise StoreExistsError(f"a store already exists at {path}; use it, or choose another folder")
        if path.exists() and not path.is_dir():
            raise StoreExistsError(f"{path} is a file, not a folder; choose a folder for the store")
        layout = TrackEmbedder.from_spec(embedders).layout
        indexes.create(factory, layout.dim, device="cpu")  # refuses a factory FAISS cannot build
        path.mkdir(parents=True, exist_ok=True)
        (path / cat.INDEX_DIR).mkdir(exist_ok=True)
        import duckdb

        tmp = path / (cat.CATALOGUE_FILE + ".init")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            con.execute(cat.SCHEMA)
            for key, value in {
                "format_version": str(cat.FORMAT_VERSION),
                "layout": layout.to_json(),
                "index_factory": factory,
                "generation": "0",
                "created_by": "tagstore",
            }.items():
                cat.set_meta(con, key, value)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, cat.catalogue_path(path))  # a half-made store never looks like a store
        return cls(path, layout, factory)

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open an existing store; raises StoreNotFoundError / StoreFormatError / StoreBusyError."""
        path = Path(path).expanduser().absolute()
        if not path.is_dir():
            raise StoreNotFoundError(
                f"no tagstore store at {path}; create one with `tagstore init {path}` or pass --store"
            )
        con = cat.connect(path, read_only=True)
        layout = Layout.from_json(cat.get_meta(con, "layout") or "[]")
        factory = cat.get_meta(con, "index_factory", DEFAULT_FACTORY) or DEFAULT_FACTORY
        return cls(path, layout, factory, con)  # the connection serves a session that follows, else closes

    @contextlib.contextmanager
    def session(self) -> Iterator[Store]:
        """Reuse one read-only connection for every read inside (a CLI command, a query)."""
        self._sessions += 1
        try:
            yield self
        finally:
            self._sessions -= 1
            if not self._sessions:
                self.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A read-only catalogue connection: the session's inside :meth:`session`, else a fresh one.

        DuckDB refuses a read-write connection in a process that holds a read-only one, so outside a
        session nothing stays open, and taking the write lock closes the session's connection.
        """
        if self._sessions and not self._writing:
            if self._con is None:
                self._con = cat.connect(self.path, read_only=True)
            yield self._con
            return
        self.close()
        with cat.reading(self.path) as con:
            yield con

    def close(self) -> None:
        """Close the cached connection, if any."""
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[Store]:
        """Hold the advisory writer lock; every writing operation runs inside it."""
        if self._writing:  # re-entrant within one store
            yield self
            return
        self.close()
        with cat.WriteLock(self.path):
            self._writing = True
            try:
                yield self
            finally:
                self._writing = False

    # --- tracks ---------------------------------------------------------------------------------

    def resolve(self, ref: str | int, con: Any | None = None) -> Track:
        """A track by catalogue id (``42``) or by path in the store (as given or resolved)."""
        if con is None:
            with self.reader() as c:
                return self.resolve(ref, c)
        cols = ", ".join(TRACK_COLUMNS)
        text = str(ref).strip()
        row = None
        if text.isdigit():
            row = con.execute(f"SELECT {cols} FROM tracks WHERE id = ?", [int(text)]).fetchone()
        if row is None:
            candidates = [text, str(Path(text).expanduser().absolute())]
            with_real = candidates + [os.path.realpath(os.path.expanduser(text))]
            for cand in dict.fromkeys(with_real):
                row = con.execute(f"SELECT {cols} FROM tracks WHERE path = ?", [cand]).fetchone()
                if row:
                    break
        if row is None:
            raise TrackNotFoundError(
                f"no track {text!r} in the store; give a catalogue id or a stored path (see `tagstore tracks`)"
            )
        return _track(row)

    def tracks(
        self,
        match: str | None = None,
        artist: str | None = None,
        album: str | None = None,
        genre: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Track]:
        """List tracks, ordered by id. ``match`` is a case-insensitive substring of path, title or artist."""
        where, params = [], []
        if match:
            where.append("(path ILIKE ? OR title ILIKE ? OR artist ILIKE ?)")
            params += [f"%{match}%"] * 3
        for col, value in (("artist", artist), ("album", album), ("genre", genre)):
            if value:
                where.append(f"{col} ILIKE ?")
                params.append(f"%{value}%")
        if ids is not None:
            where.append("id IN (SELECT unnest(?::BIGINT[]))")
            params.append([int(i) for i in ids])
        sql = f"SELECT {', '.join(TRACK_COLUMNS)} FROM tracks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        with self.reader() as con:
            return [_track(r) for r in con.execute(sql, params).fetchall()]

    def failures(self) -> list[dict[str, str]]:
        """Files that failed to ingest, with their error class and reason."""
        with self.reader() as con:
            rows = con.execute("SELECT path, error, reason, failed_at FROM ingest_failures ORDER BY path").fetchall()
        return [{"path": p, "error": e, "reason": r, "failed_at": str(t)} for p, e, r, t in rows]

    def embeddings(self, ids: Sequence[int], con: Any | None = None) -> np.ndarray:
        """Raw stored vectors ``(len(ids), layout.dim)`` float32, in the order of ``ids``."""
        if con is None:
            with self.reader() as c:
                return self.embeddings(ids, c)
        ids = [int(i) for i in ids]
        rows = con.execute(
            "SELECT track_id, vector FROM embeddings WHERE track_id IN (SELECT unnest(?::BIGINT[]))", [ids]
        ).fetchall()
        found = {tid: blob for tid, blob in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise TrackNotFoundError(f"no embedding for track id(s) {missing[:5]}; run `tagstore rebuild --re-embed`")
        out = np.frombuffer(b"".join(found[i] for i in ids), dtype=np.float32)
        return out.reshape(len(ids), self.layout.dim).copy()

    # --- operations (implemented in their own modules) ------------------------------------------

    def add(self, paths: Sequence[str | Path], **kwargs: Any) -> Any:
        """Ingest files and folders; see :func:`tagstore.ingest.add`."""
        from tagstore.ingest import add

        return add(self, paths, **kwargs)

    def remove(self, refs: Sequence[str | int], dry_run: bool = False) -> list[Track]:
        """Remove tracks (by id or stored path) with their embeddings, examples and scores."""
        from tagstore.ingest import remove

        return remove(self, refs, dry_run=dry_run)

    def similar(self, query: str | int | Path | None = None, k: int = 10, **kwargs: Any) -> Any:
        """Nearest tracks to a catalogue id, a stored path or an audio file; see :func:`tagstore.search.similar`."""
        from tagstore.search import similar

        return similar(self, query, k=k, **kwargs)

    def rebuild(self, re_embed: bool = False, **kwargs: Any) -> Any:
        """Rebuild the index from stored embeddings (or re-embed first); see :mod:`tagstore.vectors`."""
        from tagstore import vectors

        if re_embed:
            from tagstore.ingest import re_embed as do_re_embed

            return do_re_embed(self, **kwargs)
        return vectors.rebuild(self, **kwargs)

    def info(self) -> dict[str, Any]:
        """Store path, embedder layout, counts, and the active index record."""
        from tagstore import vectors

        with self.reader() as con:
            counts = {
                name: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for name, table in (
                    ("tracks", "tracks"),
                    ("embeddings", "embeddings"),
                    ("tags", "tags"),
                    ("failures", "ingest_failures"),
                )
            }
            duration = con.execute("SELECT coalesce(sum(duration_s), 0) FROM tracks").fetchone()[0]
            record = vectors.active_record(con)
            generation = int(cat.get_meta(con, "generation", "0") or 0)
        index: dict[str, Any] | None = None
        if record is not None:
            index = {
                k: record[k]
                for k in ("version", "file", "factory", "metric", "dim", "count", "checksum", "size_bytes", "built_at")
            }
            index["built_at"] = str(index["built_at"])
            index["current"] = record["generation"] == generation
        return {
            "store": str(self.path),
            "format_version": cat.FORMAT_VERSION,
            "embedders": self.layout.spec,
            "layout": self.layout.to_records(),
            "dim": self.layout.dim,
            "counts": counts,
            "total_duration_s": float(duration),
            "catalogue_bytes": cat.catalogue_path(self.path).stat().st_size,
            "index_factory": self.factory,
            "index": index,
        }

