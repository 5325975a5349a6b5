"""The library's front door: one function per command, and the only place that composes steps.

Lower modules each do one thing and return what changed (:mod:`tagstore.ingest` commits tracks,
:mod:`tagstore.derived.index` syncs the index, :mod:`tagstore.tags.fitting` scores tags); this module
strings them together, holding the write lock around every write. The CLI is a view of these
functions, and a Python user calls them the same way::

    from tagstore import api
    store = api.init("music.tagstore", embedders="dsp")
    report = api.add(store, ["~/Music"])            # IngestReport: added / skipped / failed
    query, hits = api.similar(store, "42", k=10)    # Hit: rank, id, path, title, artist, score
    api.add_tag(store, "harpsichord", examples=["12", "873"])
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagstore import catalogue as cat
from tagstore import values
from tagstore.catalogue import pending
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.records import IndexRecord
from tagstore.catalogue.tracks import Track
from tagstore.derived import index as derived_index
from tagstore.errors import InputError, MissingWeightsError, TrackNotFoundError
from tagstore.indexes import auto as index_auto
from tagstore.search import Hit, Query
from tagstore.search import by_tag as _by_tag
from tagstore.search import similar as _similar
from tagstore.search import text_search as _text_search
from tagstore.store import DEFAULT_FACTORY, Progress, Store

if TYPE_CHECKING:
    from tagstore.derived.projection import Projection
    from tagstore.check import CheckReport
    from tagstore.embedders.pretrained import ModelInfo
    from tagstore.export import Export
    from tagstore.ingest import IngestReport
    from tagstore.tags.teaching import Taught
    from tagstore.filetags import WriteReport
    from tagstore.library import UpdateReport
    from tagstore.tags.views import ScoredTrack, TagSummary

# Each command imports the modules it composes when it is called (ingest, tag fitting, model weights), so
# a query pays for the search alone: `query similar` loads ~40 fewer modules than `add-tag`.

__all__ = [
    "Hit", "Query", "Store", "Track",
    "add", "add_tag", "warm", "refresh_lookup", "explain", "export_embeddings", "import_embeddings", "info", "init",
    "open", "propagate", "rebuild", "remove", "remove_examples",
    "remove_tag", "scores", "similar", "suggest", "tag", "tag_examples", "tags", "tracks", "failures",
    "predicted_ids", "list_models", "fetch_model", "import_model", "read_list_file", "record_dict",
    "track", "generation", "search_text", "tag_tracks", "map_projection", "map_methods", "tag_score_table",
    "label", "undo_label", "teach_state", "learning_curve", "proposals", "set_threshold", "threshold_count",
    "score_histogram", "threshold",
    "write", "undo_write", "update", "missing", "RemoveReport", "export", "import_labels", "show_track",
    "check", "backup", "complete_pending",
]  # fmt: skip


# --- writing: the lock, the work a killed command left pending, the id lookup ------------------------


@contextlib.contextmanager
def _writing(store: Store) -> Iterator[Store]:
    """The write lock for one command: first complete any post-commit work a killed command left behind;
    after its last commit, bring the id lookup in step and stamp it (:mod:`tagstore.derived.lookup`), so the
    next ``query similar ID`` can skip the catalogue."""
    outermost = not store.writing
    with store.write_lock():
        if outermost:
            _remove_stale_temps(store)
            complete_pending(store)
        yield store
        if outermost:
            from tagstore.derived import lookup

            try:
                lookup.refresh(store)
            except OSError as exc:  # derived and optional: the write itself is done and committed
                logging.getLogger("tagstore").warning("could not write the id lookup in %s: %s", store.path, exc)


def _remove_stale_temps(store: Store) -> list[Path]:
    """Remove what killed writers left (:func:`tagstore.check.stale_temps`: their pids are gone, and the write
    lock is ours, so no init is half-way either); returns what was removed."""
    from tagstore import check as checks
    from tagstore.fileio import remove_files

    return remove_files(checks.stale_temps(store))


def complete_pending(store: Store) -> list[str]:
    """Do the post-commit steps recorded as pending (refit after a re-embed, rescoring new tracks), then
    clear them; returns what was done. The caller holds the write lock."""
    with store.reader() as con:
        tasks = pending.tasks(con)
    if not tasks:
        return tasks
    from tagstore.tags import fitting

    if pending.REFIT in tasks:
        fitting.refit_all(store)
    fitting.rescore(store)
    from tagstore.tags import decisions

    decisions.refresh_model_tags(store)  # model tags' thresholds follow the catalogue's scores
    with store.transaction() as con:
        for task in tasks:
            pending.clear(con, task)
    return tasks


def refresh_lookup(store: Store) -> bool:
    """Bring the id lookup in step with the catalogue (writes run this themselves); False, changing
    nothing, when another process is writing."""
    from tagstore.errors import StoreBusyError

    try:
        with _writing(store):
            pass
    except StoreBusyError:
        return False
    return True


# --- the store ----------------------------------------------------------------------------------


def init(
    path: str | os.PathLike[str], embedders: str | list[str] = "dsp", factory: str = DEFAULT_FACTORY,
    runtime: Mapping[str, Any] | None = None, memory_budget: int | str | None = None,
    fetch_weights: Callable[[str], None] | None = None,
) -> Store:  # fmt: skip
    """Create a store folder with an empty catalogue for the given embedder spec(s) and index spec
    (``"auto"``: chosen by size; or a FAISS factory string). ``memory_budget`` (bytes, or ``"8GB"``)
    bounds what ``auto`` may build; default a fraction of RAM.

    ``runtime``: ``weights_dir`` / ``threads`` for building the embedders (:class:`tagstore.config.Settings`).
    ``fetch_weights``: when given, weights an embedder lacks are fetched first (``tagstore models fetch``:
    downloaded, digest-checked, converted), with one-line messages to it; offline that fails with
    EmbedderError naming `tagstore models import`. Without it a missing bundle raises MissingWeightsError.
    """
    from tagstore.embedders import pretrained

    budget = None if memory_budget is None else index_auto.parse_size(memory_budget)
    weights_dir = (runtime or {}).get("weights_dir")
    fetched: set[str] = set()
    while True:
        try:
            return Store.init(path, embedders=embedders, factory=factory, runtime=runtime,
                              memory_budget=budget)
        except MissingWeightsError as exc:
            if fetch_weights is None or exc.bundle is None or exc.bundle in fetched:
                raise
            fetch_weights(f"the {exc.bundle} weights are not installed: fetching them (tagstore models fetch {exc.bundle})")
            pretrained.fetch(exc.bundle, fetch_weights, Path(weights_dir) if weights_dir else None)
            fetched.add(exc.bundle)


def open(path: str | os.PathLike[str], runtime: Mapping[str, Any] | None = None) -> Store:  # noqa: A001
    """Open an existing store (``runtime`` as for :func:`init`)."""
    return Store.open(path, runtime=runtime)


def info(store: Store) -> dict[str, Any]:
    """Store path, embedder layout, counts, and the active index record."""
    with store.reader() as con:
        counts = cat.counts(con)
        duration = track_sql.total_duration(con)
        record = derived_index.active_record(con)
        generation = cat.generation(con)
    index: dict[str, Any] | None = None
    if record is not None:
        index = {
            "version": record.version, "file": record.file, "factory": record.factory, "metric": record.metric,
            "dim": record.dim, "count": record.count, "checksum": record.checksum, "size_bytes": record.size,
            "built_at": record.built_at, "current": record.generation == generation,
            "spec": record.params.get("spec", record.factory), "choice": record.params.get("choice"),
            "nprobe": record.params.get("nprobe"), "recall_at_10": record.params.get("recall_at_10"),
            "exact": record.params.get("exact"), "trained_count": record.params.get("trained_count"),
        }  # fmt: skip
    return {
        "store": str(store.path),
        "format_version": cat.FORMAT_VERSION,
        "embedders": store.layout.spec,
        "layout": store.layout.to_records(),
        "dim": store.layout.dim,
        "counts": counts,
        "total_duration_s": duration,
        "catalogue_bytes": cat.catalogue_path(store.path).stat().st_size,
        "index_factory": store.factory,
        "memory_budget": store.memory_budget,
        "index": index,
        "compute": _compute(store, record),
    }


def _compute(store: Store, record: IndexRecord | None) -> dict[str, Any]:
    """Where searches run for this handle's ``search_device`` setting, and where the index was built."""
    from tagstore.indexes import devices

    asked = derived_index.search_device(store)
    try:
        search = devices.search_compute(asked, record.factory if record else store.factory)
    except Exception as exc:  # a "cuda" setting on a machine without one: say so instead of failing `info`
        search = f"unavailable ({exc})"
    built = record.params.get("built_on") if record is not None else None
    return {"search_device": asked, "search": search, "index_built_on": built}


def warm(store: Store) -> dict[str, Any]:
    """Load into this handle what queries and tag fits need, so the first request does not pay for it:
    the verified index, the built embedders and (unless another process is writing) a current vector
    matrix. For a handle kept open, as the server's is; returns what was loaded and the seconds it took."""
    import time

    from tagstore.derived import matrix
    from tagstore.errors import EmbedderError, EmptyStoreError, StoreBusyError

    t0 = time.perf_counter()
    done: dict[str, Any] = {"index": None, "embedders": store.layout.spec, "matrix": False}
    try:
        done["index"] = derived_index.open_index(store)[1].version
    except EmptyStoreError:
        pass
    try:
        store.embedder()
    except EmbedderError as exc:  # queries by id and tags still work; embedding a file will say this again
        done["embedders"] = f"not loaded: {exc}"
    if done["index"] is not None:
        try:
            with _writing(store):
                matrix.matrix(store)
            done["matrix"] = True
        except StoreBusyError:
            pass
    done["seconds"] = round(time.perf_counter() - t0, 3)
    return done


def tracks(
    store: Store,
    match: str | None = None,
    artist: str | None = None,
    album: str | None = None,
    genre: str | None = None,
    limit: int | None = None,
    ids: Sequence[int] | None = None,
    offset: int = 0,
) -> list[Track]:
    """Tracks by id, filtered by text (path, title, artist), artist, album, genre or a list of ids
    (``offset``: skip that many)."""
    limit = values.optional_count(limit, "--limit")
    return store.tracks(match=match, artist=artist, album=album, genre=genre, ids=ids, limit=limit, offset=offset)


def generation(store: Store) -> int:
    """How many changes the set of embeddings has seen (a map or cache made at another one is stale)."""
    with store.reader() as con:
        return cat.generation(con)


def track(store: Store, track_id: int) -> Track:
    """A stored track by catalogue id only (never a path); TrackNotFoundError otherwise."""
    with store.reader() as con:
        found = track_sql.by_id(con, int(track_id))
    if found is None:
        raise TrackNotFoundError(f"no track {track_id} in the store; give a catalogue id (see `tagstore tracks`)")
    return found


def failures(store: Store) -> list[dict[str, str]]:
    """Files that failed to ingest, with their error class and reason."""
    return store.failures()


# --- ingest and the index -------------------------------------------------------------------------


def add(
    store: Store,
    paths: Sequence[str | os.PathLike[str]],
    dry_run: bool = False,
    progress: Progress | None = None,
    batch_tracks: int = 32,
    batch_seconds: float = 10.0,
    ray: str | None = None,
    files_per_shard: int = 16,
    ray_cpus: int | None = None,
    decode_workers: int | None = None,
) -> IngestReport:
    """Ingest files and folders, bring the index in step, and score learned tags for the new tracks.

    A batch (one transaction) is committed after ``batch_tracks`` tracks or ``batch_seconds`` seconds.
    ``ray`` (``"local"`` or a Ray address): embed on a Ray Data pipeline into shards of ``files_per_shard``
    files, then import them here (:mod:`tagstore.bulk`); a killed run resumes from the shards it wrote.
    ``ray_cpus``: CPUs of a local Ray (default all).
    ``decode_workers``: processes decoding ahead of the embedder in a plain ``add`` (default: 2 when an
    embedder runs on CUDA, else 0).
    """
    from tagstore import bulk, ingest

    batch_tracks = values.count(batch_tracks, "--batch-size")
    if dry_run:
        return ingest.add(store, list(paths), dry_run=True)
    with _writing(store):
        if ray is None:
            report = ingest.add(store, list(paths), progress=progress, batch_tracks=batch_tracks,
                                batch_seconds=batch_seconds, decode_workers=decode_workers)  # fmt: skip
        else:
            t0 = time.perf_counter()
            report, files = bulk.embed(store, paths, address=ray, progress=progress, files_per_shard=files_per_shard,
                                       num_cpus=ray_cpus)  # fmt: skip
            bulk.import_shards(store, files, report, batch_tracks=batch_tracks)
            bulk.clear_run(store)  # imported: DuckDB holds the rows now
            report.seconds = time.perf_counter() - t0
        _after_ingest(store, report)
    return report


def _after_ingest(store: Store, report: IngestReport) -> None:
    """Bring the index in step with new embeddings and score learned tags for the new tracks (lock held)."""
    from tagstore.tags import fitting

    if report.changed or not derived_index.is_current(store):
        record = derived_index.sync(store)
        report.index_version = record.version if record else None
    done = complete_pending(store)  # learned tags score the new tracks (recorded with each batch)
    if report.changed and not done:
        fitting.rescore(store)  # shards imported without a pending record: score them all the same
        from tagstore.tags import decisions

        decisions.refresh_model_tags(store)  # model tags' thresholds follow the catalogue's scores


def export_embeddings(store: Store, directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Write every track with its embedding (and model tag scores) as Parquet shards into ``directory``."""
    from tagstore import bulk

    return bulk.export_shards(store, directory)


def import_embeddings(store: Store, directory: str | os.PathLike[str], progress: Progress | None = None) -> IngestReport:
    """Import the shards of ``directory`` (same layout only), bring the index in step and score learned tags."""
    from tagstore import bulk

    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}; give the folder of the shards (made by `tagstore export-embeddings`)")
    files = bulk.shard_files(folder)
    if not files:
        raise InputError(f"{folder} holds no shards (*.parquet); give the folder `tagstore export-embeddings` wrote")
    with _writing(store):
        report = bulk.import_shards(store, files, progress=progress)
        _after_ingest(store, report)
    return report


@dataclass
class RemoveReport:
    """What ``remove`` did: the tracks removed and the learned tags refitted because they lost an example."""

    tracks: list[Track]
    refitted: list[str]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"tracks": [t.to_dict() for t in self.tracks], "refitted": self.refitted, "dry_run": self.dry_run}


def remove(store: Store, refs: Sequence[str | int], dry_run: bool = False) -> RemoveReport:
    """Remove tracks (by id or stored path) with their embeddings, examples and scores, and refit the
    learned tags that lose an example (with ``dry_run``: the tags that would be refitted)."""
    from tagstore import ingest

    if dry_run:
        tracks = ingest.remove(store, refs, dry_run=True)
        with store.reader() as con:
            losing = set(tag_sql.tags_with_examples(con, [t.id for t in tracks]))
            names = [name for tid, name, _ in tag_sql.learned_tags(con) if tid in losing]
        return RemoveReport(tracks, names, dry_run=True)
    with _writing(store):
        return RemoveReport(*_remove_and_refit(store, refs))


def _remove_and_refit(store: Store, refs: Sequence[str | int]) -> tuple[list[Track], list[str]]:
    from tagstore import ingest
    from tagstore.tags import upkeep

    with store.reader() as con:
        ids = [store.track(r, con).id for r in refs] if refs else []
        losing = tag_sql.tags_with_examples(con, ids)
    removed = ingest.remove(store, refs)
    derived_index.sync(store)
    return removed, upkeep.refit_tags(store, losing)


def update(
    store: Store, paths: Sequence[str | os.PathLike[str]] | None = None, prune: bool = False,
    dry_run: bool = False, progress: Progress | None = None,
) -> UpdateReport:  # fmt: skip
    """Follow the files: record moves (same content, new path: id, tags and examples kept), re-embed
    changed files, list missing ones and with ``prune`` remove them (refitting tags that lose examples)."""
    from tagstore import ingest, library
    from tagstore.tags import fitting

    if dry_run:
        report = library.scan(store, list(paths) if paths else None, progress)
        report.dry_run = True
        return report
    with _writing(store):
        report = library.scan(store, list(paths) if paths else None, progress)
        library.apply_moves(store, report.moved)
        changed = False
        if report.changed:
            added = ingest.add(store, [c["path"] for c in report.changed], progress=progress)
            report.failed += [{"id": None, **f} for f in added.failed]
            changed = added.changed
        if prune and report.missing:
            _, report.refitted = _remove_and_refit(store, [m["id"] for m in report.missing])
            report.pruned = True
        if changed or not derived_index.is_current(store):
            record = derived_index.sync(store)
            report.index_version = record.version if record else None
        if changed:
            fitting.rescore(store)
    return report


def missing(store: Store) -> list[Track]:
    """Stored tracks whose file is gone."""
    from tagstore import library

    return library.missing_tracks(store)


def rebuild(
    store: Store, re_embed: bool = False, embedders: str | None = None, progress: Progress | None = None,
    index: str | None = None, memory_budget: int | str | None = None,
) -> IndexRecord:  # fmt: skip
    """Rebuild the index from the stored embeddings (atomic swap); with ``re_embed``, recompute every
    embedding first (optionally switching to ``embedders``) and refit every learned tag. ``index``
    (``"auto"`` or a FAISS factory string) and ``memory_budget`` switch the store's index for good."""
    from tagstore import ingest

    if embedders is not None and not re_embed:
        raise InputError("--embedders switches the store's embedders and needs --re-embed")
    budget = None if memory_budget is None else index_auto.parse_size(memory_budget)
    if index is not None and index != index_auto.AUTO:
        check_factory(index, store.layout.dim)
    with _writing(store):
        if not re_embed:
            return derived_index.rebuild(store, progress, spec=index, memory_budget=budget)
        ingest.re_embed(store, embedders, progress)
        record = derived_index.rebuild(store, progress, spec=index, memory_budget=budget)
        complete_pending(store)  # refit: learned tags live in the embedding space that just changed
        return record


def check_factory(factory: str, dim: int) -> None:
    """Raise a one-line error unless FAISS can build ``factory`` for ``dim``-d vectors."""
    from tagstore import indexes

    indexes.create(factory, dim, device="cpu")


def similar(
    store: Store,
    query: str | int | os.PathLike[str] | None = None,
    k: int = 10,
    tag: str | None = None,
    with_tags: Sequence[str] = (),
    without_tags: Sequence[str] = (),
    include_ids: Sequence[int] | None = None,
    exclude_ids: Sequence[int] | None = None,
) -> tuple[Query, list[Hit]]:
    """Nearest tracks to a catalogue id, a stored path, an audio file, or a learned tag's prototype."""
    k = values.count(k, "-k")
    return _similar(store, query, k=k, include_ids=include_ids, exclude_ids=exclude_ids, tag=tag,
                    with_tags=with_tags, without_tags=without_tags)  # fmt: skip


def search_text(
    store: Store, text: str, limit: int = 50, offset: int = 0,
    with_tags: Sequence[str] = (), without_tags: Sequence[str] = (),
) -> list[Hit]:  # fmt: skip
    """Tracks whose title, artist, album or path contains every word of ``text``, with tag filters."""
    return _text_search(store, text, limit=limit, offset=offset, with_tags=with_tags, without_tags=without_tags)


def tag_tracks(
    store: Store, name: str, limit: int = 50, with_tags: Sequence[str] = (), without_tags: Sequence[str] = ()
) -> list[Hit]:
    """Tracks by descending score for a tag, with tag filters (``score``: the tag's score)."""
    return _by_tag(store, name, limit=limit, with_tags=with_tags, without_tags=without_tags)


def map_projection(store: Store, method: str = "pca") -> Projection:
    """Every track placed on a 2-D map of its index vector (``pca``; ``umap`` when umap-learn is installed)."""
    from tagstore.derived import projection

    with store.write_lock():  # the memory-mapped vectors may need refreshing
        return projection.project(store, method)


def map_methods() -> list[str]:
    """The map projections this installation can compute."""
    from tagstore.derived import projection

    return projection.available()


def tag_score_table(store: Store, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every stored score of a tag: ids ``(n,)`` int64 ascending, scores ``(n,)`` float64."""
    from tagstore.tags import views

    return views.score_table(store, name)


# --- tags ---------------------------------------------------------------------------------------


def add_tag(
    store: Store,
    name: str,
    examples: Sequence[str] = (),
    negatives: Sequence[str] = (),
    method: str | None = None,
    add_files: bool = False,
    progress: Progress | None = None,
    threshold: float | None = None,
    precision: float | None = None,
) -> TagSummary:
    """Create or extend a learned tag from examples (ids, stored paths or audio files) and score every
    track; ``add_files`` ingests example files that are not in the store first. ``threshold`` (a
    calibrated probability) or ``precision`` (the expected precision to reach) sets the tag's threshold
    rule, kept by later refits; neither keeps the tag's rule (default: best expected F1)."""
    from tagstore.learning.decision import Rule
    from tagstore.tags import fitting

    fitting.check_method(method)
    rule = Rule.of(threshold, precision) if threshold is not None or precision is not None else None
    with _writing(store):
        if add_files:
            _add_outside(store, [*examples, *negatives], progress)
        return fitting.add_tag(store, name, examples, negatives, method=method, rule=rule)


def threshold(store: Store, name: str, value: float | None = None, precision: float | None = None) -> TagSummary:
    """Set a tag's threshold (learned or model tag): a probability ``value``, an expected ``precision``
    (learned tags), or neither: back to the default rule. Kept by later refits and ingests."""
    from tagstore.tags import decisions

    with _writing(store):
        return decisions.set_threshold(store, name, value, precision)


def _add_outside(store: Store, items: Sequence[str], progress: Progress | None) -> None:
    from tagstore.tags import examples as example_refs

    outside = example_refs.not_stored(store, items)
    if outside:
        report = add(store, outside, progress=progress)
        if report.failed:
            first = report.failed[0]
            raise InputError(f"cannot add example {first['path']}: {first['reason']}")


def read_list_file(path: str | os.PathLike[str]) -> list[str]:
    """Items of an examples file: one id or path per line; blank lines and ``#`` comments skipped."""
    from tagstore.tags import examples as example_refs

    return example_refs.read_list_file(path)


def tag(store: Store, names: Sequence[str] | None = None, all_tracks: bool = False) -> dict[str, Any]:
    """Score tracks that lack a score for the learned tags (``all_tracks``: rescore every track)."""
    from tagstore.tags import fitting

    with _writing(store):
        return fitting.rescore(store, names, all_tracks=all_tracks)


def tags(store: Store, kind: str | None = None, names: Sequence[str] | None = None) -> list[TagSummary]:
    """Tags (all, or those named) with their examples, method, threshold, predicted count and cross-validated AP."""
    from tagstore.tags import views

    return views.list_tags(store, kind=kind, names=names)


def scores(
    store: Store, name: str, top: int | None = 20, predicted_only: bool = False, exclude_examples: bool = False
) -> list[ScoredTrack]:
    """Tracks by descending score for a tag (learned or model); ``top=None`` lists all."""
    top = values.optional_count(top, "--top")
    from tagstore.tags import views

    return views.scores(store, name, top=top, predicted_only=predicted_only, exclude_examples=exclude_examples)


def predicted_ids(store: Store, name: str) -> np.ndarray:
    """Catalogue ids ``(m,)`` int64 predicted to carry a tag (learned or model)."""
    from tagstore.tags import views

    return views.predicted_ids(store, name)


def tag_examples(store: Store, name: str) -> list[dict[str, Any]]:
    """A learned tag's examples: label, stored track id or outside path."""
    from tagstore.tags import examples as example_refs

    return example_refs.tag_examples(store, name)


def remove_examples(store: Store, name: str, items: Sequence[str]) -> TagSummary:
    """Drop examples from a tag and refit it."""
    from tagstore.tags import fitting

    with _writing(store):
        return fitting.remove_examples(store, name, items)


def remove_tag(store: Store, name: str) -> None:
    """Delete a learned tag with its examples, scores and suggestions."""
    from tagstore.tags import fitting

    with _writing(store):
        fitting.remove_tag(store, name)


def propagate(store: Store, name: str, k: int = 10, limit: int | None = None) -> list[dict[str, Any]]:
    """Suggest the tag for the nearest neighbours of its positive examples (stored as suggestions)."""
    k, limit = values.count(k, "-k"), values.optional_count(limit, "--limit")
    from tagstore.tags import assist

    with _writing(store):
        return assist.propagate(store, name, k=k, limit=limit)


def suggest(store: Store, name: str, n: int = 10) -> list[dict[str, Any]]:
    """Tracks worth labelling next for a tag (near its threshold, and unlike each other)."""
    n = values.count(n, "-n")
    from tagstore.tags import assist

    return assist.suggest(store, name, n=n)


def explain(store: Store, track: str, name: str, k: int = 3) -> dict[str, Any]:
    """Why a track has its score for a tag: nearest examples and the parts of the score."""
    k = values.count(k, "-k")
    from tagstore.tags import assist

    return assist.explain(store, track, name, k=k)


def label(store: Store, name: str, track: int, answer: str, n: int = 10) -> Taught:
    """Answer 'yes', 'no' or 'skip' for a stored track (by id) and refit the tag; 'yes' on a new name starts
    the tag. Returns the tag, the next ``n`` proposals and the learning curve."""
    from tagstore.tags import teaching

    with store.write_lock():
        return teaching.answer(store, name, track, answer, n=n)


def undo_label(store: Store, name: str, n: int = 10) -> Taught:
    """Take back the tag's last answer (and refit); undoing the answer that started the tag removes it."""
    from tagstore.tags import teaching

    with store.write_lock():
        return teaching.undo(store, name, n=n)


def teach_state(store: Store, name: str, n: int = 10) -> Taught:
    """A learned tag with its next ``n`` proposals and its learning curve (CV AP against labels)."""
    from tagstore.tags import teaching

    return teaching.state(store, name, n=n)


def learning_curve(store: Store, name: str) -> list[dict[str, Any]]:
    """A learned tag's cross-validated AP after each answer given by :func:`label`, against the labels so far."""
    from tagstore.tags import teaching

    return teaching.learning_curve(store, name)


def proposals(store: Store, name: str, n: int = 10) -> list[dict[str, Any]]:
    """Tracks to label next for a tag: as :func:`suggest`, and leaving out tracks skipped for it."""
    from tagstore.tags import teaching

    return teaching.proposals(store, name, n=n)


def set_threshold(store: Store, name: str, threshold: float) -> TagSummary:
    """Put a tag's threshold at a score on its own scale (as :func:`score_histogram` shows it) and
    recompute its predictions; a calibrated learned tag keeps the probability there across refits."""
    from tagstore.tags import decisions

    with _writing(store):
        return decisions.set_score_threshold(store, name, threshold)


def threshold_count(store: Store, name: str, threshold: float) -> int:
    """How many tracks a tag would predict at ``threshold``."""
    from tagstore.tags import thresholds

    return thresholds.count_at_least(store, name, threshold)


def score_histogram(store: Store, name: str, bins: int = 40) -> dict[str, Any]:
    """A tag's score distribution (``edges``, ``counts``) and its threshold."""
    from tagstore.tags import thresholds

    return thresholds.histogram(store, name, bins=bins)


def record_dict(record: IndexRecord) -> dict[str, Any]:
    """An index record as JSON-ready values (statistics left out)."""
    out = asdict(record)
    out.pop("stats_mean")
    out.pop("stats_std")
    return out


# --- out to the user's world: file tags ----------------------------------------------------------


def write(
    store: Store,
    source: str = "learned",
    field: str = "TAGSTORE",
    tags: Sequence[str] | None = None,
    min_score: float | None = None,
    tracks: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> WriteReport:
    """Write predicted tags (learned, model or both) into one field of each track's file; logged for undo."""
    from tagstore import filetags

    if dry_run:
        return filetags.write(store, source, field, tags, min_score, tracks, dry_run=True)
    with _writing(store):
        return filetags.write(store, source, field, tags, min_score, tracks, progress=progress)


def undo_write(store: Store, dry_run: bool = False, progress: Progress | None = None) -> WriteReport:
    """Restore the field values the latest ``write`` run replaced (files changed since are reported)."""
    from tagstore import filetags

    if dry_run:
        return filetags.undo(store, dry_run=True)
    with _writing(store):
        return filetags.undo(store, progress=progress)


def export(
    store: Store, fmt: str = "csv", path: str | os.PathLike[str] | None = None, embeddings: bool = False,
    match: str | None = None, artist: str | None = None, album: str | None = None, genre: str | None = None,
    limit: int | None = None,
) -> tuple[Export, str | None]:  # fmt: skip
    """The catalogue, one row per track with its tags and scores, written to ``path`` as csv / json / nl /
    parquet (returns the rows and None), or rendered as text (returns the rows and the text)."""
    from tagstore import export as export_rows

    return export_rows.export(store, fmt, path, embeddings, match=match, artist=artist, album=album, genre=genre,
                              limit=limit)  # fmt: skip


def import_labels(store: Store, path: str | os.PathLike[str]) -> list[TagSummary]:
    """Create or extend every tag a labels CSV names (columns path or id, tags, negative_tags), all or nothing."""
    from tagstore.tags import importing

    with _writing(store):
        return importing.import_labels(store, path)


def show_track(store: Store, ref: str | int | os.PathLike[str]) -> dict[str, Any]:
    """One stored track: its catalogue fields, whether its file exists, and every tag it has a score for
    (``[{name, kind, score, threshold, predicted, example}]``; ``example``: positive, negative or None)."""
    with store.reader() as con:
        t = store.track(ref, con)
        tags = tag_sql.track_tags(con, t.id)
    return {**t.to_dict(), "exists": os.path.exists(t.path), "tags": tags}


# --- check, repair, backup -------------------------------------------------------------------------


def check(
    path: str | os.PathLike[str], repair: bool = False, runtime: Mapping[str, Any] | None = None
) -> CheckReport:
    """Check the store at ``path`` (:func:`tagstore.check.inspect`); with ``repair``, fix what can be fixed from
    the catalogue (derived files, orphan rows, scores, pending work, damaged embeddings whose file is at hand)
    and check again. A corrupt catalogue cannot be repaired: restore it from a backup."""
    from tagstore import check as checks

    report = checks.inspect(path)
    if not repair or not any(p.fixable for p in report.problems):
        return report
    done: list[str] = []
    if "catalogue-values" in report.kinds():
        done += cat.repair_meta(Path(path).expanduser().absolute())
    store = Store.open(path, runtime=runtime)
    try:
        with store.write_lock():
            done += _repair(store, checks.inspect(path))
    finally:
        store.close()
    final = checks.inspect(path)
    final.repaired = done
    return final


def _repair(store: Store, report: CheckReport) -> list[str]:
    from tagstore import ingest
    from tagstore.tags import fitting

    done = [f"removed {tmp}" for tmp in _remove_stale_temps(store)]
    kinds = report.kinds()
    for problem in report.problems:
        if problem.kind == "cache-corrupt":
            for old in store.cache_dir.glob("*.npy"):
                old.unlink(missing_ok=True)
            done.append("deleted the vector cache")
            break
    if "orphan-rows" in kinds:
        with store.transaction() as con:
            deleted = track_sql.delete_orphans(con)
        done += [f"deleted {n} {what}" for what, n in deleted.items()]
    bad = sorted({i for p in report.problems if p.kind == "bad-embedding" for i in p.ids})
    if bad:
        done += ingest.re_embed_tracks(store, bad)
    if kinds & {"index-missing", "index-corrupt", "index-ids", "index-behind", "bad-embedding", "orphan-rows"}:
        record = derived_index.rebuild(store)
        done.append(f"rebuilt the index (v{record.version}, {record.count} vectors)")
    tasks = complete_pending(store)
    done += [f"completed pending {t}" for t in tasks]
    result = fitting.rescore(store)
    if result["tracks"]:
        done.append(f"scored {result['tracks']} track(s) for {result['tags']} tag(s)")
    return done


def backup(store: Store, dest: str | os.PathLike[str]) -> dict[str, Any]:
    """A consistent copy of the catalogue in a new store folder ``dest`` (see :func:`tagstore.check.backup`)."""
    from tagstore import check as checks

    return checks.backup(store, dest)


# --- pre-trained models ---------------------------------------------------------------------------


def list_models(weights_dir: Path | None = None) -> list[ModelInfo]:
    """Every embedder and weights bundle, with its size, rate, licence and cache state."""
    from tagstore.embedders import pretrained

    return pretrained.list_models(weights_dir)


def fetch_model(name: str, progress: Callable[[str], None] | None = None, weights_dir: Path | None = None) -> Path:
    """Download a model's published weights, verify their digest and install them; returns the folder."""
    from tagstore.embedders import pretrained

    return pretrained.fetch(name, progress=progress, weights_dir=weights_dir)


def import_model(
    name: str, path: str | os.PathLike[str], unverified: bool = False,
    progress: Callable[[str], None] | None = None, weights_dir: Path | None = None,
) -> Path:  # fmt: skip
    """Install a model's weights from a local copy of its published file; returns the folder."""
    from tagstore.embedders import pretrained

    return pretrained.import_file(name, path, unverified=unverified, progress=progress, weights_dir=weights_dir)
