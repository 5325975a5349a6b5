"""The JSON HTTP API: a thin view of :mod:`tagstore.api` over one open store (FastAPI).

Every route is one library call; its answer is the JSON the CLI prints with ``--json``. Errors are the
library's: a :class:`~tagstore.errors.TagstoreError` becomes a 4xx answer ``{"error": one line, "type":
class name}`` (404 for an unknown track or tag, 409 for a busy store, 400 otherwise), and a malformed
parameter a 422 in the same shape. The OpenAPI page is at ``/docs``.

One store, one process, the catalogue's rules (:class:`Resident`): requests are served one at a time
(they share one DuckDB connection, and DuckDB refuses a read-write connection in a process that holds a
read-only one, so a write must not overlap a read); writes take the store's write lock like any other
writer, so a second writer — another process, or this server while one writes — is refused with the
busy error. While another process holds the write lock the server closes its connection between
requests, so that writer can commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from tagstore import __version__, api, errors
from tagstore.catalogue import LOCK_FILE
from tagstore.fileio import atomic_write
from tagstore.server.client import STORE_HEADER
from tagstore.store import Store

__all__ = ["Resident", "create_app"]

WATCH_S = 0.2
"""How often the server looks for another process holding the store's write lock (seconds)."""

_STATUS: tuple[tuple[type[errors.TagstoreError], int], ...] = (
    (errors.TrackNotFoundError, 404), (errors.UnknownTagError, 404), (errors.PathNotFoundError, 404),
    (errors.StoreBusyError, 409), (errors.EmptyStoreError, 409),
)  # fmt: skip


def status_of(exc: errors.TagstoreError) -> int:
    """The HTTP status of a library error."""
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)


def foreign_writer(store: Path) -> bool:
    """Whether a process other than this one holds the store's write lock (Linux: ``/proc/locks``;
    elsewhere: the pid the lock file names is alive)."""
    path = store / LOCK_FILE
    try:
        st = path.stat()
    except OSError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        from tagstore.server import pid_alive

        text = path.read_text(errors="replace").strip()
        return text.isdigit() and int(text) != os.getpid() and pid_alive(int(text))
    for line in lines:
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[3] == "WRITE" and parts[5] == key:
            return int(parts[4]) != os.getpid()
    return False


class Resident:
    """One store kept open for a server: its session connection, loaded index and built embedders.

    :meth:`call` runs a library function on the store, one at a time. A watcher thread closes the
    catalogue connection while another process holds the write lock (:func:`foreign_writer`), and every
    request then opens its own, as a CLI reader would; the loaded index is checked against the catalogue
    on each query, so the server follows what that writer changed.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.stepped_aside = False
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, warm: bool = True) -> dict[str, Any]:
        """Open the session, load what queries need (:func:`tagstore.api.warm`) and start watching the lock."""
        with self.lock:
            self._stack.enter_context(self.store.session())
            done = api.warm(self.store) if warm else {}
        self._watcher = threading.Thread(target=self._watch, name="tagstore-lock-watch", daemon=True)
        self._watcher.start()
        return done

    def stop(self) -> None:
        """Stop watching and close the catalogue connection."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        with self.lock:
            self._stack.close()
            self.store.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(store, *args, **kwargs)`` with the store to itself."""
        with self.lock:
            try:
                return fn(self.store, *args, **kwargs)
            finally:
                if self.stepped_aside:
                    self.store.close()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_S):
            foreign = foreign_writer(self.store.path)
            if foreign or self.stepped_aside:  # while a writer works, close what any route (the page's too) opened
                with self.lock:
                    self.stepped_aside = foreign
                    if foreign:
                        self.store.close()


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


class JSON(JSONResponse):
    """JSON that also takes numpy values and the library's dataclasses."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=_default).encode("utf-8")


class AddTagBody(BaseModel):
    """``add-tag``: positive and negative examples (ids, stored paths, or audio files on the server's disk)."""

    examples: list[str] = []
    negatives: list[str] = []
    method: Optional[str] = None
    add_files: bool = False


class TagBody(BaseModel):
    """``tag``: the learned tags to score (default: all), and whether to rescore every track."""

    names: Optional[list[str]] = None
    all: bool = False


def _similar_json(q: api.Query, hits: list[api.Hit]) -> dict[str, Any]:
    return {"query": {"text": q.text, "id": q.track_id, "path": q.path}, "results": [h.to_dict() for h in hits]}


def create_app(store: Store, resident: Resident | None = None) -> FastAPI:
    """The API for ``store`` (started here unless a started ``resident`` is given); the web page
    (:mod:`tagstore.server.web`, when installed) mounts itself at the end."""
    res = resident or Resident(store)
    app = FastAPI(title="tagstore", version=__version__, default_response_class=JSON,
                  description=f"The library's API (tagstore.api) over the store {store.path}.")  # fmt: skip
    app.state.resident = res
    app.state.store_lock = res.lock  # the web page's routes share the one-at-a-time rule (and the connection)
    if resident is None:
        res.start()
        app.router.on_shutdown.append(res.stop)
    served = os.path.realpath(store.path)

    @app.middleware("http")
    async def same_store(request: Request, call_next: Callable[[Request], Any]) -> Response:
        asked = request.headers.get(STORE_HEADER)
        if asked is not None and os.path.realpath(urllib.parse.unquote(asked)) != served:
            return JSON({"error": f"this server serves {served}, not {urllib.parse.unquote(asked)}",
                         "type": "StoreMismatch"}, status_code=409)  # fmt: skip
        return await call_next(request)

    @app.exception_handler(errors.TagstoreError)
    async def library_error(request: Request, exc: errors.TagstoreError) -> Response:
        return JSON({"error": str(exc), "type": type(exc).__name__}, status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path", "form"))
        got = first.get("input")
        message = f"{where or 'request'}: {first.get('msg', 'invalid')}" + (f", got {got!r}" if got is not None else "")
        return JSON({"error": message, "type": "InputError"}, status_code=422)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Which store this server serves, and its process."""
        return {"store": str(store.path), "pid": os.getpid(), "version": __version__}

    @app.get("/api/info")
    def info() -> Any:
        """Store path, embedder layout, counts, and the active index record."""
        return res.call(api.info)

    @app.get("/api/tracks")
    def tracks(match: Optional[str] = None, artist: Optional[str] = None, album: Optional[str] = None,
               genre: Optional[str] = None, limit: Optional[int] = Query(None, ge=0),
               offset: int = Query(0, ge=0)) -> Any:  # fmt: skip
        """Tracks by id, filtered by text (path, title, artist), artist, album or genre."""
        found = res.call(api.tracks, match=match, artist=artist, album=album, genre=genre, limit=limit, offset=offset)
        return [t.to_dict() for t in found]

    @app.get("/api/similar")
    def similar(track: Optional[str] = None, tag: Optional[str] = None, k: int = Query(10, ge=1),
                with_tag: list[str] = Query([]), without_tag: list[str] = Query([])) -> Any:  # fmt: skip
        """Nearest tracks to a catalogue id, a stored path, an audio file on the server's disk, or a tag's prototype."""
        q, hits = res.call(api.similar, track, k=k, tag=tag, with_tags=with_tag, without_tags=without_tag)
        return _similar_json(q, hits)

    @app.post("/api/similar")
    def similar_upload(file: UploadFile = File(...), k: int = Form(10, ge=1), with_tag: list[str] = Form([]),
                       without_tag: list[str] = Form([])) -> Any:  # fmt: skip
        """Nearest tracks to an uploaded audio file (embedded by the server's warm embedders)."""
        with _uploaded(file) as path:
            q, hits = res.call(api.similar, path, k=k, with_tags=with_tag, without_tags=without_tag)
        out = _similar_json(q, hits)
        out["query"].update(text=file.filename or "upload", path=None)
        return out

    @app.get("/api/tags")
    def tags(kind: Optional[str] = None) -> Any:
        """Tags with their examples, method, threshold, predicted count and cross-validated AP."""
        return [t.to_dict() for t in res.call(api.tags, kind=kind)]

    @app.get("/api/tags/{name:path}/scores")
    def scores(name: str, top: int = Query(20, ge=1), all: bool = False, predicted: bool = False,
               no_examples: bool = False) -> Any:  # fmt: skip
        """Tracks by descending score for a tag (``all``: every scored track)."""
        rows = res.call(api.scores, name, top=None if all else top, predicted_only=predicted,
                        exclude_examples=no_examples)  # fmt: skip
        return [r.to_dict() for r in rows]

    @app.get("/api/tags/{name:path}/examples")
    def tag_examples(name: str) -> Any:
        """A learned tag's examples: label, stored track id or outside path."""
        return res.call(api.tag_examples, name)

    @app.post("/api/tag")
    def tag(body: TagBody) -> Any:
        """Score tracks that lack a score for the learned tags (``all``: rescore every track; write lock)."""
        return res.call(api.tag, body.names, all_tracks=body.all)

    try:
        from tagstore.server import web
    except ImportError:
        web = None
    if web:
        web.mount(app, store)

    # Last: a tag name may hold "/", so these match any path under /api/tags/ and must not shadow the
    # page's own routes there (POST /api/tags/{name}/label, .../undo).
    @app.post("/api/tags/{name:path}")
    def add_tag(name: str, body: AddTagBody) -> Any:
        """Create or extend a learned tag from examples and score every track (takes the write lock)."""
        return res.call(api.add_tag, name, body.examples, body.negatives, method=body.method,
                        add_files=body.add_files).to_dict()  # fmt: skip

    @app.delete("/api/tags/{name:path}")
    def remove_tag(name: str) -> Any:
        """Delete a learned tag with its examples, scores and suggestions (takes the write lock)."""
        res.call(api.remove_tag, name)
        return {"removed": name}

    return app


@contextlib.contextmanager
def _uploaded(file: UploadFile) -> Iterator[str]:
    """The upload saved to a temporary file (keeping its suffix, which decoders look at); removed after."""
    suffix = Path(file.filename or "").suffix[:16]
    with tempfile.TemporaryDirectory(prefix="tagstore-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        atomic_write(path, lambda sink: shutil.copyfileobj(file.file, sink))
        yield str(path)
