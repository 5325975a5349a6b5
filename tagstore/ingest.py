"""Ingest: files and folders in, tracks and embeddings committed in batches; returns what changed.

Crash safety: each batch of tracks (with their embeddings, model-tag scores and any failures) is one
DuckDB transaction, so a killed run leaves whole batches; the next run skips what is stored (same path,
size and mtime, or same content hash) and carries on. Nothing is duplicated: content hashes are unique.

This module changes the catalogue only; bringing the index in step and scoring learned tags for the
new tracks is composed by :mod:`tagstore.api`. Each batch records that rescoring as pending work in its
own transaction (:mod:`tagstore.catalogue.pending`), so a kill right after a commit cannot leave new
tracks unscored: the next writing command completes it. One bad file (damaged, non-finite samples, a
FIFO, a broken link, a non-UTF-8 name) is a failure of that file; the batch goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import audio
from tagstore.catalogue import bump_generation, pending
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.tracks import NewTrack, Track
from tagstore.embedders.host import TrackEmbedder, TrackVector
from tagstore.errors import AudioError, InputError, PathNotFoundError, TagstoreError
from tagstore.store import Progress, Store

BATCH_TRACKS = 32
BATCH_SECONDS = 10.0
"""A batch is committed after this many tracks or seconds, whichever comes first."""
MODEL_TAG_THRESHOLD = 0.5
"""A model tag's threshold when first seen; ``api.add`` then sets each tag's own from the catalogue's scores
(:func:`tagstore.learning.decision.top_share_thresholds`)."""
FILE_ERRORS: tuple[type[BaseException], ...] = (TagstoreError, OSError, ValueError, RuntimeError, EOFError, MemoryError)
"""What decoding or embedding one file may raise because of that file: recorded as its failure, the batch goes on."""


@dataclass
class IngestReport:
    """What ``add`` did: added ``[{id, path}]``, moved ``[{id, old_path, path}]`` (same content, the old path
    gone: the track keeps its id, tags and examples), skipped ``[{path, reason}]``, failed ``[{path, error, reason}]``."""

    added: list[dict[str, Any]] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    audio_seconds: float = 0.0
    index_version: int | None = None
    shards: dict[str, int] = field(default_factory=dict)
    """Bulk ingest (``add --ray``): files embedded into shards this run, files resumed from earlier shards, shards written."""

    @property
    def changed(self) -> bool:
        """Whether the set of embeddings changed."""
        return bool(self.added or self.updated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Files to ingest: explicit files as given, folders walked recursively for audio extensions.

    Raises PathNotFoundError, before anything is done, when a given path does not exist.
    """
    if any(not str(p).strip() for p in paths):
        raise InputError("an empty path was given; name the files or folders to add (use . for this folder)")
    missing = [str(p) for p in paths if not Path(p).expanduser().exists() and not Path(p).expanduser().is_symlink()]
    if missing:
        shown = audio.display_path(missing[0])
        raise PathNotFoundError(f"no such file or folder: {shown}; check the path (nothing was added)")
    out: dict[str, Path] = {}
    for given in paths:
        p = Path(given).expanduser()
        if p.is_symlink() and not p.exists():  # broken link or loop: reported per file by _plan
            out.setdefault(str(p.absolute()), p.absolute())
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and audio.is_audio_path(name):
                        link = Path(root, name)
                        f = link.absolute() if link.is_symlink() and not link.exists() else Path(os.path.realpath(link))
                        out.setdefault(str(f), f)
        else:
            f = Path(os.path.realpath(p))
            out.setdefault(str(f), f)
    return list(out.values())


@dataclass
class _Known:
    by_path: dict[str, tuple[int, str, int, int]]  # path -> (id, hash, size, mtime_ns)
    by_hash: dict[str, tuple[int, str]]  # hash -> (id, path)


def _known(store: Store) -> _Known:
    with store.reader() as con:
        rows = track_sql.fingerprints(con)
    return _Known({r[1]: (r[0], r[2], r[3], r[4]) for r in rows}, {r[2]: (r[0], r[1]) for r in rows})


def _plan(
    paths: list[Path], known: _Known, report: IngestReport
) -> Iterator[tuple[int, Path, str, os.stat_result, int | None]]:
    """Yield ``(position, path, content_hash, stat, id_to_update)`` for files to embed; record skips in ``report``."""
    seen: set[str] = set()
    for i, path in enumerate(paths):
        key = audio.display_path(path)
        try:
            st = audio.check_file(path)  # refuses links to nowhere, FIFOs, devices, empty files, non-UTF-8 names
        except InputError as exc:
            report.failed.append({"path": key, "error": type(exc).__name__, "reason": str(exc)})
            continue
        old = known.by_path.get(key)
        if old and old[2] == st.st_size and old[3] == st.st_mtime_ns:
            report.skipped.append({"path": key, "reason": f"already in the store (id {old[0]})"})
            continue
        try:
            digest = audio.file_hash(path)
        except (OSError, InputError) as exc:
            reason = str(exc) if isinstance(exc, InputError) else f"cannot read {key}: {exc.strerror}"
            report.failed.append({"path": key, "error": type(exc).__name__, "reason": reason})
            continue
        dup = known.by_hash.get(digest)
        if dup is not None and dup[1] != key and not os.path.exists(dup[1]) and digest not in seen:
            seen.add(digest)
            report.moved.append({"id": dup[0], "old_path": dup[1], "path": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
            continue
        if dup is not None or digest in seen:
            where = f"id {dup[0]}, {dup[1]}" if dup else "earlier in this run"
            report.skipped.append({"path": key, "reason": f"same content as a stored track ({where})"})
            continue
        seen.add(digest)
        yield i, path, digest, st, (old[0] if old else None)


def add(
    store: Store,
    paths: Sequence[str | Path],
    dry_run: bool = False,
    progress: Progress | None = None,
    batch_tracks: int = BATCH_TRACKS,
    batch_seconds: float = BATCH_SECONDS,
    decode_workers: int | None = None,
) -> IngestReport:
    """Add audio files and folders (recursive) to the catalogue; see the module docstring for guarantees.

    ``decode_workers``: processes decoding files ahead of the embedder (default: 2 when an embedder runs
    on CUDA, else 0: decode in this process). The caller holds the write lock (unless ``dry_run``).
    """
    t0 = time.perf_counter()
    report = IngestReport(dry_run=dry_run)
    files = discover(paths)
    if dry_run:
        for _, path, _, _, old_id in _plan(files, _known(store), report):
            (report.updated if old_id else report.added).append({"id": old_id, "path": str(path)})
        for m in report.moved:
            m.pop("size"), m.pop("mtime_ns")
        report.seconds = time.perf_counter() - t0
        return report
    embedder = store.embedder()
    batch = _Batch(store, embedder)
    workers = (2 if embedder.uses_cuda else 0) if decode_workers is None else decode_workers
    planned = _plan(files, _known(store), report)
    try:
        for (i, path, digest, st, old_id), embedded in embedder.embed_ahead(planned, lambda item: item[1], workers):
            batch.moves(report)
            if progress:
                progress(i, len(files), str(path))
            try:
                if isinstance(embedded, TagstoreError):
                    raise embedded
                vec = embedded
                meta = audio.read_metadata(path)
                info = audio.probe(path)
            except FILE_ERRORS as exc:
                reason = str(exc) if isinstance(exc, TagstoreError) else f"{path}: cannot be embedded ({exc})"
                batch.failures.append((str(path), type(exc).__name__, reason))
                report.failed.append({"path": str(path), "error": type(exc).__name__, "reason": reason})
                continue
            row = NewTrack(
                path=str(path), content_hash=digest, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
                duration_s=vec.duration_s, sample_rate=info.sample_rate, channels=info.channels,
                format=info.format, title=meta.get("title"), artist=meta.get("artist"), album=meta.get("album"),
                genre=meta.get("genre"), vector=vec.vector,
            )  # fmt: skip
            batch.rows.append((row, old_id, vec))
            report.audio_seconds += vec.duration_s
            if len(batch.rows) >= batch_tracks or time.monotonic() - batch.started > batch_seconds:
                batch.commit(report)
        batch.moves(report)
    finally:
        batch.commit(report)  # an interrupted run keeps what it has embedded
    if progress:
        progress(len(files), len(files), "indexing")
    report.seconds = time.perf_counter() - t0
    return report


class _Batch:
    """Embedded tracks and failures waiting to be committed together."""

    def __init__(self, store: Store, embedder: TrackEmbedder) -> None:
        self.store, self.embedder = store, embedder
        self.rows: list[tuple[NewTrack, int | None, TrackVector]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.started = time.monotonic()
        self.moved = 0

    def moves(self, report: IngestReport) -> None:
        """Record the moves found so far (their files keep their ids; nothing to embed)."""
        todo = report.moved[self.moved:]
        if todo:
            with self.store.transaction() as con:
                for m in todo:
                    track_sql.move_track(con, m["id"], m["path"], m.pop("size"), m.pop("mtime_ns"))
            self.moved = len(report.moved)

    def commit(self, report: IngestReport) -> None:
        if not self.rows and not self.failures:
            return
        digest = self.store.layout.digest
        with self.store.transaction() as con:
            for row, old_id, vec in self.rows:
                if old_id is None:
                    tid = track_sql.insert_track(con, row, digest)
                    report.added.append({"id": tid, "path": row.path})
                else:
                    tid = old_id
                    track_sql.replace_track(con, tid, row, digest)
                    report.updated.append({"id": tid, "path": row.path})
                store_model_tags(con, tid, vec.model_tags, self.embedder)
            for path, error, reason in self.failures:
                track_sql.record_failure(con, path, error, reason)
            if self.rows:
                bump_generation(con)
                pending.add(con, pending.RESCORE)  # learned tags score these tracks after the commit
        self.rows, self.failures = [], []
        self.started = time.monotonic()


def store_model_tags(con: Any, track_id: int, model_tags: dict[str, np.ndarray], embedder: TrackEmbedder) -> None:
    """Scores of a model's own output tags (e.g. musicnn's 50), stored as tags of kind 'model'."""
    for emb in embedder.embedders:
        probs = model_tags.get(emb.name)
        if probs is not None:
            names = [f"{emb.name}:{name}" for name in emb.tag_names]
            tag_sql.store_model_scores(con, track_id, emb.name, names, probs, MODEL_TAG_THRESHOLD)


def remove(store: Store, refs: Sequence[str | int], dry_run: bool = False) -> list[Track]:
    """Remove tracks by id or stored path. Unknown refs raise before anything is removed.

    The caller holds the write lock (unless ``dry_run``).
    """
    if not refs:
        raise InputError("no tracks given to remove; pass catalogue ids or stored paths")
    with store.reader() as con:
        tracks = list({t.id: t for t in (store.track(r, con) for r in refs)}.values())
    if dry_run:
        return tracks
    with store.transaction() as con:
        track_sql.delete_tracks(con, [t.id for t in tracks])
    return tracks


def re_embed_tracks(store: Store, ids: Sequence[int]) -> list[str]:
    """Re-embed the given tracks from their files (a repair of damaged stored vectors); returns what was done.

    A file that is gone or changed (another content hash) is left, and said so. The caller holds the write lock.
    """
    done = []
    embedder = store.embedder()
    for tid in ids:
        track = store.find(int(tid))
        if track is None:
            continue
        try:
            if audio.file_hash(track.path) != track.content_hash:
                done.append(f"track {tid}: {track.path} changed since it was added; `tagstore remove {tid}` it")
                continue
            vec = embedder.embed_file(track.path)
        except FILE_ERRORS as exc:
            done.append(f"track {tid}: cannot re-embed {track.path} ({exc}); `tagstore remove {tid}` it")
            continue
        with store.transaction() as con:
            track_sql.set_vector(con, tid, store.layout.digest, vec.vector)
        done.append(f"re-embedded track {tid} from {track.path}")
    return done


def re_embed(store: Store, embedders: str | None = None, progress: Progress | None = None) -> TrackEmbedder:
    """Recompute every stored embedding (with the store's embedders, or switch to ``embedders``).

    New vectors are staged in batches, so a killed run resumes; the store switches to them in one
    transaction only when every track has one. Returns the embedder now in use (``store.layout`` follows).
    The caller holds the write lock, and rebuilds the index and refits the tags afterwards.
    """
    embedder = TrackEmbedder.from_spec(embedders or store.layout.spec, store.runtime)
    digest = embedder.layout.digest
    with store.transaction() as con:
        todo, total = track_sql.start_staging(con, digest)
    failed: list[str] = []
    pending: list[tuple[int, TrackVector]] = []
    done = total - len(todo)

    def flush() -> None:
        with store.transaction() as con:
            for tid, vec in pending:
                track_sql.stage_embedding(con, tid, digest, vec.vector)
                store_model_tags(con, tid, vec.model_tags, embedder)
        pending.clear()

    for tid, path in todo:
        if progress:
            progress(done, total, path)
        try:
            pending.append((tid, embedder.embed_file(path)))
        except (AudioError, OSError) as exc:
            failed.append(f"{tid} ({exc})")
        done += 1
        if len(pending) >= BATCH_TRACKS:
            flush()
    flush()
    if failed:
        raise InputError(
            f"{len(failed)} track(s) could not be re-embedded, e.g. {failed[0]}; remove them with "
            "`tagstore remove ID` (or restore the files) and run `tagstore rebuild --re-embed` again — "
            "the tracks already done are kept"
        )
    with store.transaction() as con:
        track_sql.switch_to_staged(con, embedder.layout.to_json())
    store.layout = embedder.layout
    store.use_embedder(embedder)
    return embedder
