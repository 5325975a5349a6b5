"""Ingest: files and folders in, tracks and embeddings committed in batches, the index brought up to date.

Crash safety: each batch of tracks (with their embeddings, model-tag scores and any failures) is one
DuckDB transaction, so a killed run leaves whole batches; the next run skips what is stored (same path,
size and mtime, or same content hash) and carries on. Nothing is duplicated: content hashes are unique.
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
from tagstore import catalogue as cat
from tagstore.errors import InputError, PathNotFoundError, TagstoreError
from tagstore.store import Progress, Store, Track

BATCH_TRACKS = 32
BATCH_SECONDS = 10.0
"""A batch is committed after this many tracks or seconds, whichever comes first."""


@dataclass
class IngestReport:
    """What ``add`` did: added ``[{id, path}]``, skipped ``[{path, reason}]``, failed ``[{path, error, reason}]``."""

    added: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    audio_seconds: float = 0.0
    index_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Files to ingest: explicit files as given, folders walked recursively for audio extensions.

    Raises PathNotFoundError, before anything is done, when a given path does not exist.
    """
    missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
    if missing:
        raise PathNotFoundError(f"no such file or folder: {missing[0]}; check the path (nothing was added)")
    out: dict[str, Path] = {}
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and audio.is_audio_path(name):
                        f = Path(os.path.realpath(os.path.join(root, name)))
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
    with cat.reading(store.path) as con:
        rows = con.execute("SELECT id, path, content_hash, size_bytes, mtime_ns FROM tracks").fetchall()
    return _Known({r[1]: (r[0], r[2], r[3], r[4]) for r in rows}, {r[2]: (r[0], r[1]) for r in rows})


def _plan(
    paths: list[Path], known: _Known, report: IngestReport
) -> Iterator[tuple[int, Path, str, os.stat_result, int | None]]:
    """Yield ``(position, path, content_hash, stat, id_to_update)`` for files to embed; record skips in ``report``."""
    seen: set[str] = set()
    for i, path in enumerate(paths):
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            report.failed.append({"path": key, "error": "PathNotFoundError", "reason": str(exc)})
            continue
        old = known.by_path.get(key)
        if old and old[2] == st.st_size and old[3] == st.st_mtime_ns:
            report.skipped.append({"path": key, "reason": f"already in the store (id {old[0]})"})
            continue
        try:
            digest = audio.file_hash(path)
        except OSError as exc:
            report.failed.append({"path": key, "error": "OSError", "reason": f"cannot read {key}: {exc}"})
            continue
        dup = known.by_hash.get(digest)
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
) -> IngestReport:
    """Add audio files and folders (recursive) to the store; see the module docstring for guarantees."""
    t0 = time.perf_counter()
    report = IngestReport(dry_run=dry_run)
    files = discover(paths)
    if dry_run:
        for _, path, _, _, old_id in _plan(files, _known(store), report):
            (report.updated if old_id else report.added).append({"id": old_id, "path": str(path)})
        report.seconds = time.perf_counter() - t0
        return report
    from tagstore.embedding import TrackEmbedder

    with store.write_lock():
        embedder = TrackEmbedder.from_layout(store.layout)
        known = _known(store)
        batch = _Batch(store, embedder)
        try:
            for i, path, digest, st, old_id in _plan(files, known, report):
                if progress:
                    progress(i, len(files), str(path))
                try:
                    vec = embedder.embed_file(path)
                    meta = audio.read_metadata(path)
                    info = audio.probe(path)
                except TagstoreError as exc:
                    batch.failures.append((str(path), type(exc).__name__, str(exc)))
                    report.failed.append({"path": str(path), "error": type(exc).__name__, "reason": str(exc)})
                    continue
                batch.rows.append((path, digest, st, old_id, vec, meta, info))
                report.audio_seconds += vec.duration_s
                if len(batch.rows) >= batch_tracks or time.monotonic() - batch.started > batch_seconds:
                    batch.commit(report)
        finally:
            batch.commit(report)  # an interrupted run keeps what it has embedded
        if progress:
            progress(len(files), len(files), "indexing")
        from tagstore import vectors

        if report.added or report.updated or not _index_current(store):
            record = vectors.sync(store)
            report.index_version = record["version"] if record else None
        if report.added or report.updated:
            from tagstore.tagging import rescore

            rescore(store)  # learned tags score the new tracks
    report.seconds = time.perf_counter() - t0
    return report


def _index_current(store: Store) -> bool:
    from tagstore.vectors import active_record

    with cat.reading(store.path) as con:
        record = active_record(con)
        empty = con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
        return empty or (record is not None and record["generation"] == int(cat.get_meta(con, "generation", "0") or 0))


class _Batch:
    """Embedded tracks and failures waiting to be committed together."""

    def __init__(self, store: Store, embedder: Any) -> None:
        self.store, self.embedder = store, embedder
        self.rows: list[tuple[Any, ...]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.started = time.monotonic()

    def commit(self, report: IngestReport) -> None:
        if not self.rows and not self.failures:
            return
        digest = self.store.layout.digest
        with cat.transaction(self.store.path) as con:
            for path, content_hash, st, old_id, vec, meta, info in self.rows:
                values = [
                    content_hash, st.st_size, st.st_mtime_ns, vec.duration_s, info.sample_rate, info.channels,
                    info.format, meta.get("title"), meta.get("artist"), meta.get("album"), meta.get("genre"),
                ]  # fmt: skip
                if old_id is None:
                    tid = con.execute(
                        """INSERT INTO tracks (path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate,
                               channels, format, title, artist, album, genre)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                        [str(path), *values],
                    ).fetchone()[0]
                    con.execute("INSERT INTO embeddings VALUES (?, ?, ?)", [tid, digest, vec.vector.tobytes()])
                    report.added.append({"id": tid, "path": str(path)})
                else:
                    tid = old_id
                    con.execute(
                        """UPDATE tracks SET content_hash = ?, size_bytes = ?, mtime_ns = ?, duration_s = ?,
                               sample_rate = ?, channels = ?, format = ?, title = ?, artist = ?, album = ?, genre = ?
                           WHERE id = ?""",
                        [*values, tid],
                    )
                    con.execute(
                        "UPDATE embeddings SET vector = ?, layout_digest = ? WHERE track_id = ?",
                        [vec.vector.tobytes(), digest, tid],
                    )
                    con.execute("DELETE FROM tag_scores WHERE track_id = ?", [tid])
                    cat.set_meta(con, "index_needs_rebuild", "1")
                    report.updated.append({"id": tid, "path": str(path)})
                _store_model_tags(con, tid, vec.model_tags, self.embedder)
                con.execute("DELETE FROM ingest_failures WHERE path = ?", [str(path)])
            for path, error, reason in self.failures:
                con.execute(
                    """INSERT INTO ingest_failures (path, error, reason) VALUES (?, ?, ?)
                       ON CONFLICT (path) DO UPDATE SET error = excluded.error, reason = excluded.reason,
                           failed_at = now()""",
                    [path, error, reason],
                )
            if self.rows:
                cat.bump_generation(con)
        self.rows, self.failures = [], []
        self.started = time.monotonic()


MODEL_TAG_THRESHOLD = 0.5


def _store_model_tags(con: Any, track_id: int, model_tags: dict[str, np.ndarray], embedder: Any) -> None:
    """Scores of a model's own output tags (e.g. musicnn's 50), stored as tags of kind 'model'."""
    for emb in embedder.embedders:
        probs = model_tags.get(emb.name)
        if probs is None:
            continue
        names = [f"{emb.name}:{name}" for name in emb.tag_names]
        con.execute(
            """INSERT INTO tags (name, kind, source, method, threshold)
               SELECT unnest(?::VARCHAR[]), 'model', ?, 'model', ? ON CONFLICT (name) DO NOTHING""",
            [names, emb.name, MODEL_TAG_THRESHOLD],
        )
        con.execute(
            """INSERT OR REPLACE INTO tag_scores
               SELECT t.id, ?, p.score, p.score >= ? FROM tags t
               JOIN (SELECT unnest(?::VARCHAR[]) AS name, unnest(?::REAL[]) AS score) p ON p.name = t.name""",
            [track_id, MODEL_TAG_THRESHOLD, names, [float(x) for x in probs]],
        )


def remove(store: Store, refs: Sequence[str | int], dry_run: bool = False) -> list[Track]:
    """Remove tracks by id or stored path. Unknown refs raise before anything is removed."""
    if not refs:
        raise InputError("no tracks given to remove; pass catalogue ids or stored paths")
    with store.write_lock():
        with cat.reading(store.path) as con:
            tracks = list({t.id: t for t in (store.resolve(r, con) for r in refs)}.values())
        if dry_run:
            return tracks
        ids = [t.id for t in tracks]
        with cat.transaction(store.path) as con:
            for table, col in (
                ("tag_examples", "track_id"),
                ("tag_scores", "track_id"),
                ("tag_suggestions", "track_id"),
                ("embeddings", "track_id"),
                ("tracks", "id"),
            ):
                con.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT unnest(?::BIGINT[]))", [ids])
            cat.bump_generation(con)
        from tagstore import vectors

        vectors.sync(store)
    return tracks


def re_embed(store: Store, embedders: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Recompute every stored embedding (with the store's embedders, or switch to ``embedders``).

    New vectors are staged in ``embeddings_staging`` in batches, so a killed run resumes; the store
    switches to them in one transaction only when every track has one, then the index is rebuilt.
    """
    from tagstore import vectors
    from tagstore.embedding import TrackEmbedder
    from tagstore.errors import AudioError

    with store.write_lock():
        embedder = TrackEmbedder.from_spec(embedders or store.layout.spec)
        digest = embedder.layout.digest
        with cat.transaction(store.path) as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS embeddings_staging "
                "(track_id BIGINT PRIMARY KEY, layout_digest VARCHAR NOT NULL, vector BLOB NOT NULL)"
            )
            con.execute("DELETE FROM embeddings_staging WHERE layout_digest <> ?", [digest])
            todo = con.execute(
                "SELECT id, path FROM tracks WHERE id NOT IN (SELECT track_id FROM embeddings_staging) ORDER BY id"
            ).fetchall()
            total = con.execute("SELECT count(*) FROM tracks").fetchone()[0]
        failed: list[str] = []
        pending: list[tuple[int, Any]] = []
        done = total - len(todo)

        def flush() -> None:
            with cat.transaction(store.path) as con:
                for tid, vec in pending:
                    con.execute("INSERT INTO embeddings_staging VALUES (?, ?, ?)", [tid, digest, vec.vector.tobytes()])
                    _store_model_tags(con, tid, vec.model_tags, embedder)
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
        with cat.transaction(store.path) as con:
            con.execute("DELETE FROM embeddings")
            con.execute("INSERT INTO embeddings SELECT track_id, layout_digest, vector FROM embeddings_staging")
            con.execute("DROP TABLE embeddings_staging")
            cat.set_meta(con, "layout", embedder.layout.to_json())
            cat.set_meta(con, "index_needs_rebuild", "1")
            cat.bump_generation(con)
        store.layout = embedder.layout
        record = vectors.rebuild(store, progress, lock=False)
        from tagstore.tagging import refit_all

        refit_all(store)  # learned tags live in the embedding space that just changed
        return record
