"""The store handle: a folder holding the DuckDB catalogue and the files derived from it.

``Store`` sits at the bottom of the house, just above the catalogue: its paths, its embedder layout,
connections (one read-only connection kept for a session, the write lock), the track resolver, and two
things it holds for the modules above it: a built embedder and the loaded index. It composes nothing;
:mod:`tagstore.api` does::

    store = Store.init("~/music.tagstore", embedders="dsp")
    api.add(store, ["~/Music"])
    api.similar(store, "42", k=10)
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagstore import catalogue as cat
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.tracks import Track
from tagstore.errors import (
    InputError,
    StoreDamagedError,
    StoreExistsError,
    StoreNotFoundError,
    TrackNotFoundError,
)
from tagstore.fileio import storage_errors
from tagstore.layout import Layout

if TYPE_CHECKING:
    from tagstore.embedders.host import TrackEmbedder

__all__ = ["DEFAULT_FACTORY", "INDEX_SPEC_KEY", "MEMORY_BUDGET_KEY", "OutsideFile", "Progress", "Store", "Track"]

Progress = Callable[[int, int, str], None]
"""Progress callback: ``(done, total, current item)``."""

DEFAULT_FACTORY = "auto"
"""``auto``: the index chosen by catalogue size (:mod:`tagstore.indexes.auto`); else a FAISS factory string."""
INDEX_SPEC_KEY = "index_factory"
MEMORY_BUDGET_KEY = "index_memory_budget"
INIT_WAIT_S = 60.0
"""How long an `init` waits for another `init` of the same folder to finish."""


def _check_new_store(path: Path) -> None:
    if cat.catalogue_path(path).exists():
        raise StoreExistsError(f"a store already exists at {path}; use it, or choose another folder")
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file, not a folder; choose a folder for the store")


@dataclass(frozen=True)
class OutsideFile:
    """A reference that is not in the catalogue but names an audio file on disk (absolute ``path``)."""

    path: str


class Store:
    """A tagstore folder. Construct with :meth:`init` or :meth:`open`."""

    def __init__(
        self, path: Path, layout: Layout, factory: str, con: Any | None = None, runtime: Mapping[str, Any] | None = None,
        memory_budget: int | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self.memory_budget = memory_budget
        """Bytes the ``auto`` index may take (None: a fraction of RAM, decided at build time)."""
        self.runtime = dict(runtime or {})
        """Settings for building embedders that do not change their output: ``weights_dir``, ``threads``."""
        self.layout = layout
        self.factory = factory
        self._con = con  # read-only connection kept for a session (see :meth:`session`)
        self._sessions = 0
        self._con_guard = threading.Lock()
        self._con_user: int | None = None  # the thread using the session connection, while one does
        self._con_depth = 0
        self._con_local = threading.local()  # other threads' cursors on it
        self._writing = False
        self._embedder: TrackEmbedder | None = None
        self._held_index: tuple[Any, Any] | None = None  # (key, index): see hold_index

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def init(
        cls, path: str | Path, embedders: str | list[str] = "dsp", factory: str = DEFAULT_FACTORY,
        runtime: Mapping[str, Any] | None = None, memory_budget: int | None = None,
    ) -> Store:  # fmt: skip
        """Create a store folder with an empty catalogue for the given embedder spec(s) and index spec
        (``"auto"`` or a FAISS factory string); ``memory_budget`` in bytes bounds the ``auto`` index."""
        from tagstore import indexes
        from tagstore.embedders.host import TrackEmbedder

        path = Path(path).expanduser().absolute()
        if not str(path).strip("/"):
            raise InputError("the store path is empty; give a folder for the store")
        _check_new_store(path)
        embedder = TrackEmbedder.from_spec(embedders, runtime)
        layout = embedder.layout
        if factory != DEFAULT_FACTORY:
            indexes.create(factory, layout.dim, device="cpu")  # refuses a factory FAISS cannot build
        meta = {"layout": layout.to_json(), INDEX_SPEC_KEY: factory, "generation": "0", "created_by": "tagstore"}
        if memory_budget is not None:
            meta[MEMORY_BUDGET_KEY] = str(int(memory_budget))
        with storage_errors(path):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise InputError(
                    f"cannot create the store folder {path}: a part of that path is a file; choose a path under a folder"
                ) from None
            # Concurrent inits of one folder: the lock lets one create the catalogue (under a temporary name,
            # renamed into place); the others wait for it, then find the store and say so.
            with cat.WriteLock(path).acquire(wait_s=INIT_WAIT_S):
                _check_new_store(path)
                (path / cat.INDEX_DIR).mkdir(exist_ok=True)
                cat.create(path, meta)
        store = cls(path, layout, factory, runtime=runtime, memory_budget=memory_budget)
        store._embedder = embedder
        return store

    @classmethod
    def open(cls, path: str | Path, runtime: Mapping[str, Any] | None = None) -> Store:
        """Open an existing store; raises StoreNotFoundError / StoreFormatError / StoreBusyError.

        ``runtime``: ``weights_dir`` / ``threads`` for building its embedders (see :attr:`runtime`).
        """
        path = Path(path).expanduser().absolute()
        if not path.is_dir():
            raise StoreNotFoundError(
                f"no tagstore store at {path}; create one with `tagstore init {path}` or pass --store"
            )
        con = cat.connect(path, read_only=True)
        with cat.guard(path):
            text = cat.get_meta(con, "layout") or "[]"
            factory = cat.get_meta(con, INDEX_SPEC_KEY, "Flat") or "Flat"  # stores from before `auto` are Flat
            budget = cat.get_meta(con, MEMORY_BUDGET_KEY)
        try:
            layout = Layout.from_json(text)
            if not layout.blocks or layout.dim < 1:
                raise ValueError("no embedders")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            con.close()
            raise StoreDamagedError(
                f"the store {path} records an unreadable embedder layout ({text[:60]!r}: {exc}); "
                f"restore the store from a backup (`tagstore backup DEST` makes one)"
            ) from None
        return cls(path, layout, factory, con, runtime, int(budget) if budget and budget.isdigit() else None)  # the connection serves a session that follows, else closes

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
    def reader(self) -> Iterator[cat.Connection]:
        """A read-only catalogue connection: the session's inside :meth:`session`, else a fresh one.

        DuckDB refuses a read-write connection in a process that holds a read-only one, so outside a
        session nothing stays open, and taking the write lock closes the session's connection.
        """
        if self._sessions and not self._writing:
            if self._con is None:
                self._con = cat.connect(self.path, read_only=True)
            me = threading.get_ident()
            with self._con_guard:
                mine = self._con_user in (None, me)
                if mine:
                    self._con_user, self._con_depth = me, self._con_depth + 1
            if mine:
                try:
                    with cat.guard(self.path):
                        yield self._con
                finally:
                    with self._con_guard:
                        self._con_depth -= 1
                        if not self._con_depth:
                            self._con_user = None
                return
            # Another thread is inside the session connection (a DuckDB connection runs one call at a
            # time): this thread reads through a cursor of its own on the same database, kept while it nests.
            local = self._con_local
            held = getattr(local, "cursor", None)
            cursor = held if held is not None else self._con.cursor()
            local.cursor, local.depth = cursor, getattr(local, "depth", 0) + 1
            try:
                with cat.guard(self.path):
                    yield cursor
            finally:
                local.depth -= 1
                if not local.depth:
                    local.cursor = None
                    cursor.close()
            return
        self.close()
        with cat.reading(self.path) as con:
            yield con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[cat.Connection]:
        """A read-write connection in one transaction (the caller holds :meth:`write_lock`)."""
        self.close()
        with cat.transaction(self.path) as con:
            yield con

    def close(self) -> None:
        """Close the cached connection, if any."""
        if self._con is not None:
            self._con.close()
            self._con = None

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[Store]:
        """Hold the advisory writer lock; every writing operation runs inside it (re-entrant)."""
        if self._writing:
            yield self
            return
        self.close()
        with storage_errors(self.path), cat.WriteLock(self.path):
            self._writing = True
            try:
                yield self
            finally:
                self._writing = False

    @property
    def writing(self) -> bool:
        """Whether this handle holds the write lock."""
        return self._writing

    # --- what the store holds for the layers above ---------------------------------------------

    def embedder(self) -> TrackEmbedder:
        """The store's embedders, built once per handle and checked against the stored layout."""
        from tagstore.embedders.host import TrackEmbedder

        if self._embedder is None or self._embedder.layout.digest != self.layout.digest:
            self._embedder = TrackEmbedder.from_layout(self.layout, self.runtime)
        else:
            self._embedder.check(self.layout)  # cheap: the backends describe themselves again
        return self._embedder

    def use_embedder(self, embedder: TrackEmbedder) -> None:
        """Keep an embedder already built for :attr:`layout` (after a re-embed switched it)."""
        self._embedder = embedder

    def hold_index(self, key: Any, index: Any) -> None:
        """Keep a loaded index under ``key`` (what identifies the file), so later queries reuse it."""
        self._held_index = (key, index)

    def held_index(self, key: Any) -> Any | None:
        """The index kept under ``key``, or None."""
        held = self._held_index
        return held[1] if held is not None and held[0] == key else None

    # --- tracks ---------------------------------------------------------------------------------

    def resolve(self, ref: str | int | os.PathLike[str], con: Any | None = None) -> Track | OutsideFile:
        """The one resolver: a catalogue id (``42``), a stored path (as given or resolved), else an audio file.

        Raises TrackNotFoundError when ``ref`` is none of these, InputError when it names a folder or
        something that is not a regular file.
        """
        track = self.find(ref, con)
        if track is not None:
            return track
        text = str(ref).strip()
        path = Path(text).expanduser()
        try:
            is_file, is_dir = bool(text) and path.is_file(), bool(text) and path.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte
            raise InputError(f"{text[:60]!r}... is not a usable path ({exc}); give a track id or an audio file") from None
        if is_file:
            return OutsideFile(str(path.absolute()))
        if is_dir:
            raise InputError(f"{text} is a folder; give a track id, a stored path or one audio file")
        if text and path.exists():
            raise InputError(f"{text} is not a regular file (a device or a pipe?); give a track id or an audio file")
        raise TrackNotFoundError(
            f"no track {text!r} in the store and no such file; give a catalogue id, a stored path "
            "or an audio file (see `tagstore tracks`)"
        )

    def track(self, ref: str | int | os.PathLike[str], con: Any | None = None) -> Track:
        """A stored track by catalogue id or stored path; TrackNotFoundError otherwise."""
        track = self.find(ref, con)
        if track is None:
            raise TrackNotFoundError(
                f"no track {str(ref).strip()!r} in the store; give a catalogue id or a stored path (see `tagstore tracks`)"
            )
        return track

    def find(self, ref: str | int | os.PathLike[str], con: Any | None = None) -> Track | None:
        """A stored track by catalogue id or stored path, or None."""
        if con is None:
            with self.reader() as c:
                return self.find(ref, c)
        text = str(ref).strip()
        if text.isascii() and text.isdigit():
            found = track_sql.by_id(con, int(text))
            if found is not None:
                return found
        if not text:
            return None
        if len(text) > 4096 or "\x00" in text:
            return None  # no stored path is that long or holds NUL
        candidates = [text, str(Path(text).expanduser().absolute()), os.path.realpath(os.path.expanduser(text))]
        for cand in dict.fromkeys(candidates):
            found = track_sql.by_path(con, cand)
            if found is not None:
                return found
        return None

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
        with self.reader() as con:
            return track_sql.list_tracks(con, match, artist, album, genre, ids, limit, offset)

    def failures(self) -> list[dict[str, str]]:
        """Files that failed to ingest, with their error class and reason."""
        with self.reader() as con:
            return track_sql.failures(con)

    def embeddings(self, ids: Sequence[int], con: Any | None = None) -> np.ndarray:
        """Raw stored vectors ``(len(ids), layout.dim)`` float32, in the order of ``ids``."""
        if con is None:
            with self.reader() as c:
                return track_sql.embeddings(c, ids, self.layout.dim)
        return track_sql.embeddings(con, ids, self.layout.dim)

    def index_file(self, name: str) -> Path:
        """Where the index file ``name`` lives."""
        return self.path / cat.INDEX_DIR / name

    @property
    def cache_dir(self) -> Path:
        """The folder of the derived vector matrix."""
        return self.path / cat.CACHE_DIR
