"""The web page: listen, search, teach tags by ear, and a map of the collection.

:func:`mount` adds to a FastAPI app the page (``/``), its static files (``/web/...``: plain HTML, JS and
CSS, no build step) and the JSON routes the page calls. Each route is one call into :mod:`tagstore.api`
(the page is a view of the library), run under one lock and one read session per request, since a
:class:`~tagstore.Store` handle serves one caller at a time. Errors are 4xx JSON ``{"error": "one line"}``.

Files: audio is served by catalogue id only (``/api/tracks/{id}/audio``; anything but digits is a 404,
never a path), with HTTP range requests (206) so players can seek; formats a browser cannot play are
decoded once to a WAV in a private temporary folder. Uploads (search by an audio file) are streamed to a
temporary file, refused past :data:`UPLOAD_LIMIT` bytes, and deleted after the search.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from tagstore import api, audio
from tagstore.catalogue.tracks import Track
from tagstore.derived.projection import Projection
from tagstore.errors import (
    InputError,
    StoreBusyError,
    TagstoreError,
    TrackNotFoundError,
    UnknownTagError,
)
from tagstore.store import Store

__all__ = ["UPLOAD_LIMIT", "mount", "media_type"]

STATIC = Path(__file__).parent / "static"
UPLOAD_LIMIT = 64 << 20
"""The largest uploaded audio file accepted, in bytes (64 MiB)."""
TRANSCODE_KEEP = 32
"""Transcoded WAVs kept per server (the least recently played beyond this are deleted)."""
MAX_K = 500

T = TypeVar("T")

# --- errors as JSON -----------------------------------------------------------------------------

_STATUS: tuple[tuple[type[TagstoreError], int], ...] = (
    (UnknownTagError, 404),
    (TrackNotFoundError, 404),
    (StoreBusyError, 409),
    (TagstoreError, 400),
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


class _Route(APIRoute):
    """A route whose library errors and invalid parameters become JSON with a one-line message."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except TagstoreError as exc:
                return _error(next(code for cls, code in _STATUS if isinstance(exc, cls)), str(exc))
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
                return _error(400, f"{where or 'request'}: {first.get('msg', 'invalid input')}")

        return run


# --- what the page is served from ---------------------------------------------------------------


def media_type(fmt: str | None) -> str | None:
    """The MIME type a browser plays a stored track's ``format`` (``"FLAC/PCM_16"``, ``"ogg/opus"`` ...) with,
    or None when it should be transcoded (AIFF, ADPCM WAV, WMA, ALAC, ...)."""
    container, _, codec = (fmt or "").partition("/")
    container, codec = container.lower(), codec.lower()
    if container == "wav":
        return "audio/wav" if codec in ("pcm_u8", "pcm_16", "pcm_24", "pcm_32", "float") else None
    simple = {"flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
    if container in simple:
        return simple[container]
    if codec in ("aac", "mp3", "opus", "vorbis", "flac"):
        if "mp4" in container or "mov" in container:
            return "audio/mp4"
        if "matroska" in container or "webm" in container:
            return "audio/webm"
        for name, kind in (("ogg", "audio/ogg"), ("mp3", "audio/mpeg"), ("flac", "audio/flac")):
            if container == name:
                return kind
    return None


class _Transcodes:
    """WAV copies of tracks a browser cannot play, in a private temporary folder (made at the first
    transcode, removed at exit)."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._kept: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def wav(self, track: Track) -> Path:
        key = f"{track.id}-{track.content_hash.replace(':', '-')[:40]}"
        with self._lock:
            if key in self._kept and self._kept[key].is_file():
                self._kept.move_to_end(key)
                return self._kept[key]
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="tagstore-web-")
            dest = Path(self._dir.name) / f"{key}.wav"
            audio.to_wav(track.path, dest)
            self._kept[key] = dest
            while len(self._kept) > TRANSCODE_KEEP:
                _, old = self._kept.popitem(last=False)
                old.unlink(missing_ok=True)
            return dest


class _Web:
    """The store behind the page, the lock that serialises its use, kept maps and transcodes."""

    def __init__(self, store: Store, lock: Any) -> None:
        self.store = store
        self.lock = lock
        self.maps: dict[str, tuple[Projection, bytes]] = {}
        self.transcodes = _Transcodes()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one library call on the store, alone, inside one read session."""
        with self.lock, self.store.session():
            return fn(self.store, *args, **kwargs)

    def projection(self, method: str) -> tuple[Projection, bytes]:
        """The map by ``method`` and its JSON, kept until the catalogue changes (100k points: 2.4 MB)."""
        with self.lock, self.store.session():
            kept = self.maps.get(method)
            if kept is None or kept[0].generation != api.generation(self.store):
                proj = api.map_projection(self.store, method)
                body = json.dumps({
                    "method": proj.method, "methods": api.map_methods(), "generation": proj.generation,
                    "ids": proj.ids.tolist(), "x": _finite(proj.xy[:, 0]), "y": _finite(proj.xy[:, 1]),
                }, separators=(",", ":")).encode()  # fmt: skip
                kept = self.maps[method] = (proj, body)
            return kept


def _track_id(text: str) -> int:
    """A catalogue id from a URL segment; anything but a plain number (a path, say) is not found."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise TrackNotFoundError(f"no track {text[:60]!r}: tracks are addressed by catalogue id")
    return int(text)


def _name(text: str) -> str:
    """A tag name as the catalogue keeps it (trimmed, NFC)."""
    return unicodedata.normalize("NFC", text.strip())


def _finite(values: np.ndarray, digits: int = 4) -> list[float | None]:
    """JSON-ready values, rounded; NaN and infinities (no score) become None."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    out: list[float | None] = np.round(np.where(ok, values, 0.0), digits).tolist()
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            out[i] = None
    return out


def _hits(hits: Sequence[Any]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hits]


# --- request bodies -----------------------------------------------------------------------------


class LabelBody(BaseModel):
    track: int
    answer: str
    n: int = 10


class ThresholdBody(BaseModel):
    threshold: float


# --- the routes ---------------------------------------------------------------------------------


def mount(app: FastAPI, store: Store) -> None:
    """Add the page at ``/``, its files under ``/web/`` and its JSON routes under ``/api/`` to ``app``."""
    lock = getattr(app.state, "store_lock", None) or threading.RLock()
    app.state.store_lock = lock
    web = _Web(store, lock)
    router = APIRouter(route_class=_Route)

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.get("/api/tracks/{track_id}/audio")
    def track_audio(track_id: str) -> FileResponse:
        track = web.call(api.track, _track_id(track_id))
        if not os.path.isfile(track.path):
            raise TrackNotFoundError(f"track {track.id}'s file is gone from {track.path}; run `tagstore add` again")
        kind = media_type(track.format)
        if kind is not None:
            return FileResponse(track.path, media_type=kind)
        return FileResponse(web.transcodes.wav(track), media_type="audio/wav")

    @router.get("/api/web/tracks/{track_id}")
    def track_info(track_id: str) -> dict[str, Any]:
        return web.call(api.track, _track_id(track_id)).to_dict()

    @router.get("/api/search")
    def search(
        mode: str = "text", q: str = "", track: str | None = None, tag: str | None = None,
        k: int = Query(25, ge=1, le=MAX_K),
        with_tags: list[str] = Query([], alias="with"), without_tags: list[str] = Query([], alias="without"),
    ) -> dict[str, Any]:  # fmt: skip
        filters = {"with_tags": [t for t in with_tags if t], "without_tags": [t for t in without_tags if t]}
        if mode == "text":
            return {"mode": mode, "results": _hits(web.call(api.search_text, q, limit=k, **filters))}
        if mode == "similar":
            if track is None:
                raise InputError("a similar search needs track=ID")
            tid = _track_id(track)
            web.call(api.track, tid)  # by id only: never resolved as a path
            _, hits = web.call(api.similar, tid, k=k, **filters)
            return {"mode": mode, "track": tid, "results": _hits(hits)}
        if mode == "tag":
            if not tag:
                raise InputError("a tag search needs tag=NAME")
            return {"mode": mode, "tag": tag, "results": _hits(web.call(api.tag_tracks, tag, limit=k, **filters))}
        raise InputError(f"unknown search mode {mode!r}; use text, similar or tag (or POST a file to /api/search/upload)")

    @router.post("/api/search/upload")
    async def search_upload(
        request: Request, name: str = "", k: int = Query(25, ge=1, le=MAX_K),
        with_tags: list[str] = Query([], alias="with"), without_tags: list[str] = Query([], alias="without"),
    ) -> dict[str, Any]:  # fmt: skip
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > UPLOAD_LIMIT:
            return _error(413, f"the upload is {int(declared)} bytes; the limit is {UPLOAD_LIMIT} bytes")  # type: ignore[return-value]
        suffix = os.path.splitext(name)[1].lower()
        sink = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, deleted in finally
            prefix="tagstore-upload-", suffix=suffix if suffix in audio.AUDIO_EXTENSIONS else "", delete=False
        )
        tmp = sink.name
        try:
            size = 0
            with sink:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > UPLOAD_LIMIT:
                        return _error(413, f"the upload is over the limit of {UPLOAD_LIMIT} bytes")  # type: ignore[return-value]
                    sink.write(chunk)
            if size == 0:
                raise InputError("the upload is empty; send the audio file as the request body")
            filters = {"with_tags": [t for t in with_tags if t], "without_tags": [t for t in without_tags if t]}
            _, hits = await run_in_threadpool(web.call, api.similar, tmp, k=k, **filters)
            return {"mode": "upload", "name": name, "bytes": size, "results": _hits(hits)}
        finally:
            os.unlink(tmp)

    @router.get("/api/map")
    def map_points(method: str = "pca") -> Response:
        return Response(web.projection(method)[1], media_type="application/json")

    @router.get("/api/map/scores")
    def map_scores(tag: str, method: str = "pca") -> dict[str, Any]:
        proj, _ = web.projection(method)
        ids, scores = web.call(api.tag_score_table, tag)
        aligned = np.full(len(proj.ids), np.nan)
        if len(ids):
            at = np.clip(np.searchsorted(ids, proj.ids), 0, len(ids) - 1)
            hit = ids[at] == proj.ids
            aligned[hit] = scores[at[hit]]
        summary = next(iter(web.call(api.tags, names=[_name(tag)])), None)
        threshold = None if summary is None else summary.threshold
        return {"tag": _name(tag), "threshold": threshold, "scores": _finite(aligned)}

    @router.get("/api/web/tags")
    def tag_list() -> dict[str, Any]:
        return {"tags": [t.to_dict() for t in web.call(api.tags)]}

    @router.get("/api/web/tags/{name:path}/count")
    def tag_count(name: str, threshold: float) -> dict[str, Any]:
        return {"tag": name, "threshold": threshold, "count": web.call(api.threshold_count, name, threshold)}

    @router.get("/api/web/tags/{name:path}")
    def tag_page(name: str, top: int = Query(20, ge=1, le=MAX_K)) -> dict[str, Any]:
        def gather(store: Store) -> dict[str, Any]:
            matches = api.tags(store, names=[_name(name)])
            if not matches:
                api.scores(store, name, top=1)  # raises the library's UnknownTagError with its hint
            summary = matches[0]
            examples: list[dict[str, Any]] = []
            curve: list[dict[str, Any]] = []
            if summary.kind == "learned":
                examples = api.tag_examples(store, name)
                ids = [e["id"] for e in examples if e["id"] is not None]
                rows = {t.id: t for t in api.tracks(store, ids=ids)} if ids else {}
                for e in examples:
                    t = rows.get(e["id"])
                    e.update(title=t.title if t else None, artist=t.artist if t else None,
                             duration_s=t.duration_s if t else None)  # fmt: skip
                curve = api.learning_curve(store, name)
            top_rows = [s.to_dict() for s in api.scores(store, name, top=top, exclude_examples=True)]
            return {"tag": summary.to_dict(), "examples": examples, "top": top_rows, "curve": curve,
                    "histogram": api.score_histogram(store, name)}  # fmt: skip

        return web.call(gather)

    @router.put("/api/tags/{name:path}/threshold")
    def tag_threshold(name: str, body: ThresholdBody) -> dict[str, Any]:
        return {"tag": web.call(api.set_threshold, name, body.threshold).to_dict()}

    @router.get("/api/tags/{name:path}/suggest")
    def tag_suggest(name: str, n: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        return web.call(api.teach_state, name, n=n).to_dict()

    @router.post("/api/tags/{name:path}/label")
    def tag_label(name: str, body: LabelBody) -> dict[str, Any]:
        if not 1 <= body.n <= 100:
            raise InputError(f"n must be between 1 and 100, got {body.n}")
        return web.call(api.label, name, body.track, body.answer, n=body.n).to_dict()

    @router.post("/api/tags/{name:path}/undo")
    def tag_undo(name: str, n: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        return web.call(api.undo_label, name, n=n).to_dict()

    app.include_router(router)
    app.mount("/web", StaticFiles(directory=STATIC), name="tagstore-web")
