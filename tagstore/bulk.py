"""Bulk ingest on Ray Data, and embedding shards: Parquet files that carry embeddings between machines.

**Shards.** A shard is a Parquet file of tracks: ``position`` (the file's place in its run, the order a
plain ``add`` commits in), ``path``, ``content_hash``, ``size_bytes``, ``mtime_ns``, the probe and tags
(``duration_s``, ``sample_rate``, ``channels``, ``format``, ``title``, ``artist``, ``album``, ``genre``),
``embedding`` (``list<float32>`` of the layout's dim: the raw stored vector), ``tags__<embedder>``
(a model's own tag probabilities, e.g. musicnn's 50), and for files that could not be embedded ``error``
and ``reason`` (or ``skip_reason``) with no embedding. Its Parquet metadata names the shard format, the
embedder layout (JSON, with every weight digest), the layout digest and the model tag names. A shard is
written whole or not at all (:func:`tagstore.fileio.atomic_write`). :func:`import_shards` refuses shards
of another layout before importing anything.

**Bulk ingest** (:func:`embed`, composed by :func:`tagstore.api.add` with ``ray=...``): the driver lists
the files and drops those the store (same path, size and mtime) or the shards of an earlier, killed run
already hold; a Ray Data pipeline then hashes and decodes files on CPU tasks (known content is skipped
there), embeds them on a pool of actors that rebuild the store's exact layout (weight digests checked:
:meth:`tagstore.embedders.host.TrackEmbedder.from_layout`; one GPU per actor where the cluster has
GPUs), and writes shards into ``STORE/shards/<layout digest>/``. One writer, the driver, then imports the
shards into DuckDB in position order, so ids per content hash are those a plain ``add`` gives; the shards
are deleted once imported. A killed run leaves whole shards (and whole import batches): the next run
embeds only what no shard holds and imports the rest, skipping what is already stored.

pyarrow and ray are imported when used (the ``ray`` extra).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import audio
from tagstore.catalogue import bump_generation
from tagstore.catalogue import shards as shard_sql
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.tracks import NewTrack
from tagstore.errors import InputError, LayoutMismatchError, MissingDependencyError, TagstoreError
from tagstore.fileio import atomic_write
from tagstore.ingest import BATCH_TRACKS, MODEL_TAG_THRESHOLD, IngestReport, discover
from tagstore.layout import Layout
from tagstore.store import Progress, Store

log = logging.getLogger("tagstore")

__all__ = ["FILES_PER_SHARD", "SHARD_DIR", "embed", "export_shards", "import_shards", "run_dir", "shard_files"]

SHARD_FORMAT = "1"
SHARD_DIR = "shards"
"""Folder of a store where bulk ingest writes its shards (one subfolder per layout digest)."""
FILES_PER_SHARD = 16
"""Files per shard: what a killed run can lose, and what the import reads at a time."""
DECODE_FILES = 2
"""Files per decode task: decoded audio travels through Ray's object store to the embedding actors."""
DECODE_MEMORY = 256 << 20
"""Memory (bytes) a decode task asks Ray for: two files decoded at every embedder rate."""
_META_FORMAT, _META_LAYOUT, _META_DIGEST, _META_TAGS = (
    b"tagstore.shard_format", b"tagstore.layout", b"tagstore.layout_digest", b"tagstore.tag_names",
)  # fmt: skip
_TEXT = ("format", "title", "artist", "album", "genre")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            "embedding shards need the package 'pyarrow', which is not installed; run: pip install 'tagstore[ray]'"
        ) from exc
    return pyarrow


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            "`add --ray` needs the package 'ray', which is not installed; run: pip install 'tagstore[ray]'"
        ) from exc
    return ray


# --- the shard format ---------------------------------------------------------------------------


def _schema(layout: Layout, tag_names: Mapping[str, Sequence[str]], extra: Sequence[tuple[str, Any]] = ()) -> Any:
    """The Arrow schema of rows after embedding (``extra`` columns appended: the decode stage's audio)."""
    pa = _pyarrow()
    fields = [
        ("position", pa.int64()), ("path", pa.string()), ("content_hash", pa.string()), ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()), ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()),
        *[(name, pa.string()) for name in _TEXT],
        ("embedding", pa.list_(pa.float32(), layout.dim)),
        *[(f"tags__{name}", pa.list_(pa.float32(), len(names))) for name, names in tag_names.items()],
        ("error", pa.string()), ("reason", pa.string()), ("skip_reason", pa.string()),
    ]  # fmt: skip
    return pa.schema([pa.field(n, t) for n, t in [*fields, *extra]])


def _metadata(layout: Layout, tag_names: Mapping[str, Sequence[str]]) -> dict[bytes, bytes]:
    return {
        _META_FORMAT: SHARD_FORMAT.encode(), _META_LAYOUT: layout.to_json().encode(),
        _META_DIGEST: layout.digest.encode(), _META_TAGS: json.dumps(dict(tag_names)).encode(),
    }  # fmt: skip


def _table(rows: Sequence[Mapping[str, Any]], schema: Any) -> Any:
    pa = _pyarrow()
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def write_shard(path: Path, table: Any, layout: Layout, tag_names: Mapping[str, Sequence[str]]) -> None:
    """Write ``table`` (rows of :func:`_schema`) as a shard at ``path``, atomically, with the layout in its metadata."""
    pa = _pyarrow()
    table = table.replace_schema_metadata(_metadata(layout, tag_names))
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink, compression="zstd")
    atomic_write(path, sink.getvalue().to_pybytes())


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's metadata says: the layout its embeddings follow, and its model tag names."""

    path: Path
    layout: Layout
    digest: str
    tag_names: dict[str, list[str]]


def read_header(path: Path) -> ShardHeader:
    """The metadata of one shard; InputError naming the file when it is not a tagstore shard."""
    pa = _pyarrow()
    try:
        meta = pa.parquet.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc}); remove it from the shard folder") from None
    if meta.get(_META_FORMAT) != SHARD_FORMAT.encode():
        raise InputError(
            f"{path} is not a tagstore embedding shard (format {meta.get(_META_FORMAT)!r}); "
            "make shards with `tagstore export-embeddings` or `tagstore add --ray`"
        )
    layout = Layout.from_json(meta[_META_LAYOUT].decode())
    return ShardHeader(path, layout, meta[_META_DIGEST].decode(), json.loads(meta[_META_TAGS].decode()))


def shard_files(directory: Path) -> list[Path]:
    """The shard files of a folder (``*.parquet``, not the temp files of a writer), by name."""
    return sorted(p for p in Path(directory).glob("*.parquet") if not p.name.startswith("."))


def check_headers(files: Sequence[Path], layout: Layout) -> dict[str, list[str]]:
    """Refuse (LayoutMismatchError, before anything is imported) shards whose layout is not ``layout``;
    returns their model tag names."""
    tag_names: dict[str, list[str]] = {}
    for path in files:
        head = read_header(path)
        if head.digest != layout.digest or head.layout.to_json() != layout.to_json():
            raise LayoutMismatchError(
                f"shard {path} holds embeddings of layout {head.layout.spec!r} (digest {head.digest}), but this store's "
                f"is {layout.spec!r} (digest {layout.digest}); nothing was imported. Import it into a store made with "
                f"`tagstore init --embedders {head.layout.spec}` and the same weights, or embed the files here with `tagstore add`"
            )
        tag_names.update(head.tag_names)
    return tag_names


# --- import: one writer, shards into the catalogue ---------------------------------------------------


def import_shards(
    store: Store, files: Sequence[Path], report: IngestReport | None = None, progress: Progress | None = None,
    batch_tracks: int = BATCH_TRACKS,
) -> IngestReport:  # fmt: skip
    """Import shard rows into the catalogue in position order, in transactions of ``batch_tracks`` tracks.

    What the store holds is skipped (same path and content, or same content under another path); a stored
    path with new content is updated; failure rows are recorded as failures. Idempotent, so an import
    killed part-way is finished by running it again. The caller holds the write lock; the index and tag
    scores are brought up to date by :mod:`tagstore.api`.
    """
    report = report or IngestReport()
    tag_names = check_headers(files, store.layout)
    with store.reader() as con:
        rows = track_sql.fingerprints(con)
    by_path = {r[1]: (r[0], r[2]) for r in rows}
    by_hash = {r[2]: (r[0], r[1]) for r in rows}
    seen: set[str] = set()
    pending: list[tuple[dict[str, Any], int | None]] = []
    failures: list[dict[str, Any]] = []
    total = _row_count(files)
    done = 0

    def commit() -> None:
        if not pending and not failures:
            return
        with store.transaction() as con:
            for row, old_id in pending:
                track = _new_track(row)
                if old_id is None:
                    tid = track_sql.insert_track(con, track, store.layout.digest)
                    report.added.append({"id": tid, "path": track.path})
                else:
                    tid = old_id
                    track_sql.replace_track(con, tid, track, store.layout.digest)
                    report.updated.append({"id": tid, "path": track.path})
                for name, names in tag_names.items():
                    probs = row.get(f"tags__{name}")
                    if probs is not None:
                        tag_sql.store_model_scores(con, tid, name, [f"{name}:{n}" for n in names], probs, MODEL_TAG_THRESHOLD)
            for row in failures:
                track_sql.record_failure(con, row["path"], row["error"], row["reason"])
            if pending:
                bump_generation(con)
        pending.clear()
        failures.clear()

    reader = shard_sql.reader()
    try:
        for batch in shard_sql.rows(reader, files):
            for row in _batch_rows(batch, store.layout.dim, tag_names):
                done += 1
                if progress:
                    progress(done, total, row["path"])
                path, digest = row["path"], row["content_hash"]
                if row.get("error"):
                    failures.append(row)
                    report.failed.append({"path": path, "error": row["error"], "reason": row["reason"]})
                    continue
                old = by_path.get(path)
                if row.get("skip_reason"):
                    report.skipped.append({"path": path, "reason": row["skip_reason"]})
                elif old is not None and old[1] == digest:
                    report.skipped.append({"path": path, "reason": f"already in the store (id {old[0]})"})
                elif digest in by_hash or digest in seen:
                    dup = by_hash.get(digest)
                    where = f"id {dup[0]}, {dup[1]}" if dup else "earlier in this run"
                    report.skipped.append({"path": path, "reason": f"same content as a stored track ({where})"})
                else:
                    seen.add(digest)
                    pending.append((row, old[0] if old else None))
                    report.audio_seconds += float(row["duration_s"])
                if len(pending) >= batch_tracks:
                    commit()
        commit()
    finally:
        reader.close()
    return report


def _row_count(files: Sequence[Path]) -> int:
    pa = _pyarrow()
    return sum(pa.parquet.read_metadata(f).num_rows for f in files)


def _batch_rows(batch: Any, dim: int, tag_names: Mapping[str, Sequence[str]]) -> Iterator[dict[str, Any]]:
    """Rows of a record batch as dicts, the list columns as float32 arrays (None where null)."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    lists = {"embedding": dim, **{f"tags__{n}": len(names) for n, names in tag_names.items() if f"tags__{n}" in columns}}
    arrays = {name: _list_rows(columns[name], width) for name, width in lists.items() if name in columns}
    plain = {name: col.to_pylist() for name, col in columns.items() if name not in lists}
    for i in range(batch.num_rows):
        row = {name: values[i] for name, values in plain.items()}
        row.update({name: values[i] for name, values in arrays.items()})
        yield row


def _list_rows(column: Any, width: int) -> list[np.ndarray | None]:
    """A (fixed-size) list<float> column as one float32 array ``(width,)`` per row, None where null."""
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out: list[np.ndarray | None] = []
    start = 0
    for ok in valid:
        if ok:
            out.append(values[start : start + width].copy())
            start += width
        else:
            out.append(None)
    return out


def _new_track(row: Mapping[str, Any]) -> NewTrack:
    return NewTrack(
        path=row["path"], content_hash=row["content_hash"], size_bytes=int(row["size_bytes"]),
        mtime_ns=int(row["mtime_ns"]), duration_s=float(row["duration_s"]), sample_rate=int(row["sample_rate"]),
        channels=int(row["channels"]), format=row["format"], title=row["title"], artist=row["artist"],
        album=row["album"], genre=row["genre"], vector=np.asarray(row["embedding"], dtype=np.float32),
    )  # fmt: skip


# --- export ------------------------------------------------------------------------------------------


def export_shards(store: Store, directory: str | os.PathLike[str], rows_per_shard: int = 4096) -> dict[str, Any]:
    """Write every stored track with its embedding (and model tag scores) as shards into ``directory``.

    The folder is created; one that already holds shards is refused. Returns ``{"directory", "shards",
    "tracks", "layout_digest"}``.
    """
    pa = _pyarrow()
    out = Path(directory).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to export the embeddings into")
    if out.is_dir() and shard_files(out):
        raise InputError(f"{out} already holds shards; export into an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    layout, written, tracks = store.layout, 0, 0
    with store.reader() as con:
        tags = shard_sql.model_tags(con)
        tag_names = {source: [name.split(":", 1)[1] for _, name in items] for source, items in tags.items()}
        schema = _schema(layout, tag_names)
        buffer: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal written
            if buffer:
                write_shard(out / f"part-{written:05d}.parquet", _table(buffer, schema), layout, tag_names)
                written += 1
                buffer.clear()

        for batch in shard_sql.export_batches(con):
            rows = batch.to_pylist()
            ids = [r["position"] for r in rows]
            scores: dict[tuple[int, int], float] = {
                (t, g): s for t, g, s in shard_sql.model_scores(con, ids, [g for items in tags.values() for g, _ in items])
            }
            for row in rows:
                row["embedding"] = np.frombuffer(row["embedding"], dtype=np.float32).tolist()
                for source, items in tags.items():
                    values = [scores.get((row["position"], g)) for g, _ in items]
                    row[f"tags__{source}"] = None if any(v is None for v in values) else values
                buffer.append(row)
                tracks += 1
                if len(buffer) >= rows_per_shard:
                    flush()
        flush()
    del pa
    return {"directory": str(out), "shards": written, "tracks": tracks, "layout_digest": layout.digest}


# --- bulk ingest on Ray Data ----------------------------------------------------------------------


def run_dir(store: Store) -> Path:
    """Where this store's bulk ingest keeps the shards of its current layout."""
    return store.path / SHARD_DIR / store.layout.digest


def clear_run(store: Store) -> None:
    """Delete the imported shards of a bulk ingest (DuckDB holds their rows now)."""
    shutil.rmtree(run_dir(store), ignore_errors=True)


@dataclass
class _Todo:
    position: int
    path: str


def _plan(store: Store, paths: Sequence[str | os.PathLike[str]], report: IngestReport) -> tuple[list[_Todo], int]:
    """Files that neither the store (same path, size, mtime) nor an earlier run's shards hold; and how many
    the shards hold. Stale shard folders (another layout) are removed."""
    files = discover(paths)
    base = store.path / SHARD_DIR
    for stale in base.glob("*") if base.is_dir() else ():
        if stale.name != store.layout.digest:
            log.warning("removing shards of another layout in %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    existing = shard_files(run_dir(store))
    check_headers(existing, store.layout)
    reader = shard_sql.reader()
    try:
        in_shards = {(p, int(s), int(m)) for p, s, m in shard_sql.keys(reader, existing)}
    finally:
        reader.close()
    with store.reader() as con:
        known = {r[1]: (r[0], r[3], r[4]) for r in track_sql.fingerprints(con)}
    todo, resumed = [], 0
    for i, path in enumerate(files):
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            report.failed.append({"path": key, "error": "PathNotFoundError", "reason": str(exc)})
            continue
        old = known.get(key)
        if old and old[1] == st.st_size and old[2] == st.st_mtime_ns:
            report.skipped.append({"path": key, "reason": f"already in the store (id {old[0]})"})
        elif (key, st.st_size, st.st_mtime_ns) in in_shards:
            resumed += 1
        else:
            todo.append(_Todo(i, key))
    return todo, resumed


def embed(
    store: Store, paths: Sequence[str | os.PathLike[str]], address: str = "local", report: IngestReport | None = None,
    progress: Progress | None = None, files_per_shard: int = FILES_PER_SHARD, actors: int | None = None,
    num_cpus: int | None = None,
) -> tuple[IngestReport, list[Path]]:  # fmt: skip
    """Embed files on Ray into shards under :func:`run_dir`; returns the report so far (plan skips and
    failures) and every shard of the run, earlier runs' included, for :func:`import_shards`.

    ``address``: ``"local"`` starts a Ray on this machine (``num_cpus``: its CPUs, default all), anything
    else is passed to ``ray.init(address=...)`` (``"auto"``, ``"ray://head:10001"``); a Ray already
    initialised in this process is used as it is. ``actors``: embedding actors (default: one per GPU of
    the cluster, else one per two CPUs). The catalogue is not changed.
    """
    if files_per_shard < 1:
        raise InputError(f"files per shard must be at least 1, got {files_per_shard}")
    report = report or IngestReport()
    todo, resumed = _plan(store, paths, report)
    out = run_dir(store)
    out.mkdir(parents=True, exist_ok=True)
    report.shards = {"resumed_files": resumed, "embedded_files": 0, "written": 0}
    if todo:
        embedder = store.embedder()  # the driver checks the layout first: a mismatch fails before any work
        tag_names = {e.name: list(e.tag_names) for e in embedder.embedders if e.tag_names}
        for done, summary in enumerate(_run_pipeline(store, embedder, todo, tag_names, address, files_per_shard,
                                                     actors, num_cpus), start=1):  # fmt: skip
            report.shards["written"] = done
            report.shards["embedded_files"] += int(summary["rows"])
            if progress:
                progress(report.shards["embedded_files"], len(todo), summary["shard"])
    return report, shard_files(out)


def _run_pipeline(
    store: Store, embedder: Any, todo: list[_Todo], tag_names: dict[str, list[str]], address: str,
    files_per_shard: int, actors: int | None, num_cpus: int | None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Yield one summary ``{"shard", "rows"}`` per shard the Ray Data pipeline writes."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot reach a Ray cluster at {address!r} ({exc}); give `--ray local` or a Ray address") from None
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n_actors = actors or (gpus if gpus else max(1, int(resources.get("CPU", 1)) // 2))
        layout_json = store.layout.to_json()
        runtime = {**store.runtime, "threads": 1} if not gpus else dict(store.runtime)
        decode_schema = _schema(store.layout, tag_names, [("peak", _pyarrow().float64()),
                                *[(f"pcm_{r}", _pyarrow().large_binary()) for r in embedder.rates]])  # fmt: skip
        with store.reader() as con:
            known = {h: (i, p) for i, p, h, _, _ in track_sql.fingerprints(con)}
        items = [{"position": t.position, "path": t.path} for t in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / DECODE_FILES)))
        # Decode tasks ask for memory (the decoded audio); their resources then differ from the actors',
        # which also keeps Ray Data from fusing decoding into the embedding actors.
        ds = ds.map_batches(
            _decode_batch, batch_size=DECODE_FILES, batch_format="pyarrow", num_cpus=1, memory=DECODE_MEMORY,
            fn_kwargs={"rates": embedder.rates, "min_duration_s": embedder.min_duration_s, "chunk_s": embedder.chunk_s,
                       "known": known, "schema": decode_schema},
        )  # fmt: skip
        ds = ds.map_batches(
            _EmbedActor, batch_size=DECODE_FILES, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_gpus=1 if gpus else 0, num_cpus=1,
            fn_constructor_kwargs={"layout_json": layout_json, "runtime": runtime, "tag_names": tag_names},
        )  # fmt: skip
        ds = ds.map_batches(
            _write_shard_batch, batch_size=files_per_shard, batch_format="pyarrow", num_cpus=0.1,
            fn_kwargs={"directory": str(run_dir(store)), "layout_json": layout_json, "tag_names": tag_names},
        )  # fmt: skip
        try:
            yield from ds.iter_rows()
        except Exception as exc:  # a worker's TagstoreError (missing weights, another layout) arrives wrapped
            cause = _tagstore_cause(exc)
            if cause is not None:
                raise cause from None
            raise
    finally:
        if started:
            ray.shutdown()


def _tagstore_cause(exc: BaseException) -> TagstoreError | None:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, TagstoreError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__  # type: ignore[assignment]
        seen += 1
    return None


def _decode_batch(
    batch: Any, rates: list[int], min_duration_s: float, chunk_s: float, known: Mapping[str, tuple[int, str]], schema: Any
) -> Any:
    """Ray task: hash, stat, probe, read tags and decode each file of ``batch`` (``position``, ``path``)."""
    from tagstore.embedders.host import decode

    out = []
    for item in batch.to_pylist():
        path = item["path"]
        row: dict[str, Any] = {"position": item["position"], "path": path}
        try:
            st = os.stat(path)
            row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, content_hash=audio.file_hash(path))
            dup = known.get(row["content_hash"])
            if dup is not None:
                row["skip_reason"] = f"same content as a stored track (id {dup[0]}, {dup[1]})"
                out.append(row)
                continue
            info = audio.probe(path)
            row.update(sample_rate=info.sample_rate, channels=info.channels, format=info.format)
            row.update({k: v for k, v in audio.read_metadata(path).items() if k in _TEXT})
            decoded = decode(path, rates, min_duration_s, chunk_s)
            row.update(duration_s=decoded.duration_s, peak=decoded.peak)
            row.update({f"pcm_{r}": decoded.samples[r].astype(np.float32, copy=False).tobytes() for r in rates})
        except TagstoreError as exc:
            row.update(error=type(exc).__name__, reason=str(exc))
        except OSError as exc:
            row.update(error="OSError", reason=f"cannot read {path}: {exc}")
        out.append(row)
    return _table(out, schema)


class _EmbedActor:
    """Ray actor: the store's embedders, rebuilt from its layout (weight digests checked), embedding decoded files."""

    def __init__(self, layout_json: str, runtime: Mapping[str, Any], tag_names: Mapping[str, Sequence[str]]) -> None:
        from tagstore.embedders.host import TrackEmbedder

        self.layout = Layout.from_json(layout_json)
        self.embedder = TrackEmbedder.from_layout(self.layout, runtime)
        self.schema = _schema(self.layout, tag_names)

    def __call__(self, batch: Any) -> Any:
        from tagstore.embedders.host import DecodedAudio

        out = []
        for row in batch.to_pylist():
            pcm = {r: row.pop(f"pcm_{r}", None) for r in self.embedder.rates}
            if row.get("error") or row.get("skip_reason"):
                out.append(row)
                continue
            samples = {r: np.frombuffer(b, dtype=np.float32) for r, b in pcm.items()}
            try:
                vec = self.embedder.embed_decoded(DecodedAudio(row["path"], samples, row["duration_s"], row["peak"]))
            except TagstoreError as exc:
                row.update(error=type(exc).__name__, reason=str(exc))
                out.append(row)
                continue
            row["embedding"] = vec.vector.tolist()
            row["duration_s"] = vec.duration_s
            for name, probs in vec.model_tags.items():
                row[f"tags__{name}"] = np.asarray(probs, dtype=np.float32).tolist()
            out.append(row)
        return _table(out, self.schema)


def _write_shard_batch(batch: Any, directory: str, layout_json: str, tag_names: Mapping[str, Sequence[str]]) -> Any:
    """Ray task: write a batch of embedded rows as one shard, atomically; returns ``{"shard", "rows"}``."""
    pa = _pyarrow()
    name = f"shard-{uuid.uuid4().hex[:12]}.parquet"
    write_shard(Path(directory) / name, batch, Layout.from_json(layout_json), tag_names)
    return pa.table({"shard": [name], "rows": [batch.num_rows]})
