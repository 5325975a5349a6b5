"""Few-shot evaluation of tagstore's own tag learning on a labelled corpus (after Ma & Lerch 2024).

``evaluate(labels_csv, embedders=["dsp"])`` reads a label table (path, track, tags, split; see
:func:`tagstore.corpus.read_labels`), embeds its clips once per embedder spec into an *eval store*
(``<csv dir>/.tagstore-eval/<spec>``, a normal tagstore store, so a second run embeds only new or
changed clips), loads the vectors into memory once, and runs the protocol of :mod:`tagstore.protocol`:
for each tag, K and draw, K train positives (distinct tracks first) and ``neg_per_pos * K`` train
negatives. Every draw is fitted the way ``tagstore add-tag`` fits a tag, through
:func:`tagstore.learn.fit_tag`, with:

- the draw's positives and negatives as the user's examples;
- the train split as the catalogue: its per-dimension mean/std (:class:`~tagstore.learn.CatalogueStats`)
  and the unlabelled sample, drawn as :func:`tagstore.tagging.fit_examples` draws it — up to
  ``tagging.UNLABELLED_SAMPLE`` catalogue clips not among the examples, seeded by ``tagging._seed(tag)``,
  in catalogue order — and the same fit seed;

then scored on the test split, which no fit ever sees. Reported: macro AP and ROC-AUC over the tags with
positives and negatives in both splits, mean ± std over draws, per-tag AP, and the full-train ceiling
(every train clip labelled; always fitted with ``probe``, and with each requested method).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import protocol
from tagstore.errors import EmbedderError, InputError, MissingDependencyError, MissingWeightsError, UnknownEmbedderError
from tagstore.protocol import CurvePoint, Draw, FewShotPlan, LabelledClip, Result
from tagstore.store import Progress

log = logging.getLogger("tagstore")

DEFAULT_SHOTS = (1, 2, 5, 10, 20)
DEFAULT_METHODS = ("probe", "prototype", "ensemble")
DEFAULT_NEG_PER_POS = 1
STORE_DIR = ".tagstore-eval"
"""Folder beside the label CSV that holds one eval store per embedder spec."""


@dataclass(frozen=True)
class Clip:
    """A usable row of the label table: ``id`` is the clip's resolved path (the protocol's clip id)."""

    id: str
    track: str
    tags: frozenset[str]
    split: str


@dataclass
class EmbedderRun:
    """What evaluating one embedder spec did: its store, what it embedded, and where the time went (s)."""

    spec: str
    store: str
    dim: int = 0
    clips: int = 0  # clips with a vector in the store
    embedded: int = 0  # clips embedded by this run (0 when the store already held them all)
    failed: list[dict[str, str]] = field(default_factory=list)  # [{path, error, reason}]
    embed_s: float = 0.0  # store.add, 0 when nothing new
    load_s: float = 0.0  # reading the vectors into memory
    fit_s: float = 0.0  # fit_tag calls
    score_s: float = 0.0  # scoring the test split
    fits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FitRecord:
    """One fit (kept with ``keep_fits=True``): the examples it saw and its scores on ``plan.eval_ids``."""

    embedder: str
    method: str
    draw: Draw
    unlabelled_ids: tuple[str, ...]
    scores: np.ndarray  # (len(plan.eval_ids),) float32
    fit_s: float  # seconds in fit_tag


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`: per-(embedder, method, K, draw, tag) results and their curves."""

    labels_csv: Path
    settings: dict[str, Any]
    plan: FewShotPlan
    results: list[Result]
    curves: list[CurvePoint]
    embedders: list[EmbedderRun]
    skipped_embedders: dict[str, str]
    dropped: list[dict[str, str]]  # clips left out of the protocol: [{path, reason}]
    seconds: float
    fits: list[FitRecord] | None = None

    @property
    def per_tag_ap(self) -> dict[tuple[str, str], dict[str, dict[int | None, tuple[float, float]]]]:
        """(embedder, method) → tag → K (None: full train) → (mean, std) AP over draws."""
        return protocol.per_tag_ap(self.results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, tags, curves, per-tag AP (K keys as text, "full" for the ceiling), results."""
        key = lambda k: "full" if k is None else str(k)  # noqa: E731
        return {
            "labels": str(self.labels_csv),
            **self.settings,
            "tags": list(self.plan.tags),
            "skipped_tags": dict(self.plan.skipped),
            "n_test_clips": len(self.plan.eval_ids),
            "embedders": [e.to_dict() for e in self.embedders],
            "skipped_embedders": dict(self.skipped_embedders),
            "dropped_clips": list(self.dropped),
            "curves": [asdict(p) for p in self.curves],
            "per_tag_ap": {f"{emb}/{method}": {tag: {key(k): list(v) for k, v in by_k.items()}
                                              for tag, by_k in tags.items()}
                           for (emb, method), tags in self.per_tag_ap.items()},
            "results": [asdict(r) for r in self.results],
            "seconds": self.seconds,
        }

    def write_report(self, out_dir: str | os.PathLike) -> Path:
        """The HTML report with learning curves (see :func:`tagstore.report.write_report`) and
        ``eval.json`` (:meth:`to_dict`) in ``out_dir``; returns index.html's path."""
        import json

        from tagstore.report import write_report

        s = self.settings
        notes = {
            "labels": str(self.labels_csv),
            "embedders": ", ".join(e.spec for e in self.embedders),
            "methods": ", ".join(s["methods"]), "shots": ", ".join(map(str, s["shots"])),
            "draws": s["draws"], "negatives per positive": s["neg_per_pos"], "seed": s["seed"],
            "tags evaluated": len(self.plan.tags), "test clips": len(self.plan.eval_ids),
        }  # fmt: skip
        if self.skipped_embedders:
            notes["skipped embedders"] = "; ".join(f"{k}: {v}" for k, v in self.skipped_embedders.items())
        if self.dropped:
            notes["clips dropped"] = str(len(self.dropped))
        page = write_report(self.results, out_dir, notes=notes)
        tmp = page.with_name("eval.json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, page.with_name("eval.json"))
        return page


# --- the label table ----------------------------------------------------------------------------


def read_clips(labels_csv: str | os.PathLike) -> list[Clip]:
    """The label table with paths resolved against the CSV's folder; InputError on a bad row."""
    from tagstore.corpus import read_labels

    csv_path = Path(labels_csv).expanduser()
    rows = read_labels(csv_path)
    if not rows:
        raise InputError(f"{csv_path} lists no clips; add rows path,track,tags,split")
    base, seen, clips = csv_path.absolute().parent, set(), []
    for line, row in enumerate(rows, start=2):
        path = os.path.realpath(base / Path(row.path).expanduser())
        if not row.path or not os.path.isfile(path):
            raise InputError(f"{csv_path} line {line}: no audio file {row.path!r} (looked for {path}); "
                             "paths are relative to the CSV's folder")
        if row.split not in protocol.SPLITS:
            raise InputError(f"{csv_path} line {line}: split {row.split!r}; use 'train' or 'test'")
        if path in seen:
            raise InputError(f"{csv_path} line {line}: {row.path!r} is listed twice; give each clip one row")
        seen.add(path)
        clips.append(Clip(path, row.track or path, frozenset(row.tags), row.split))
    return clips


# --- eval stores --------------------------------------------------------------------------------


def store_dir(root: Path, spec: str) -> Path:
    """The eval store of ``spec`` under ``root`` (characters other than ``[A-Za-z0-9._=,-]`` become ``_``)."""
    return root / re.sub(r"[^A-Za-z0-9._=,-]+", "_", spec.strip())


def _stale(store: Any, clips: Sequence[Clip]) -> list[str]:
    """Clip paths the store lacks or holds with another size/mtime (ingest's own skip rule)."""
    with store.reader() as con:
        known = {p: (s, m) for p, s, m in con.execute("SELECT path, size_bytes, mtime_ns FROM tracks").fetchall()}
    out = []
    for c in clips:
        st = os.stat(c.id)
        if known.get(c.id) != (st.st_size, st.st_mtime_ns):
            out.append(c.id)
    return out


def _vectors(store: Any, clips: Sequence[Clip]) -> tuple[np.ndarray, dict[str, int]]:
    """The stored vectors of ``clips`` (m, dim) float32 and clip id → row, matched by path, else by content."""
    from tagstore import audio

    with store.reader() as con:
        rows = con.execute("SELECT t.id, t.path, t.content_hash FROM tracks t JOIN embeddings e "
                           "ON e.track_id = t.id").fetchall()  # fmt: skip
        by_path = {p: i for i, p, _ in rows}
        by_hash = {h: i for i, _, h in rows}
        track_of: dict[str, int] = {}
        for c in clips:
            tid = by_path.get(c.id)
            if tid is None:  # a duplicate of another file's content is stored once, under that path
                tid = by_hash.get(audio.file_hash(c.id))
            if tid is not None:
                track_of[c.id] = tid
        ids = sorted(set(track_of.values()))
        X = store.embeddings(ids, con) if ids else np.zeros((0, store.layout.dim), np.float32)
    pos = {tid: i for i, tid in enumerate(ids)}
    return X, {cid: pos[tid] for cid, tid in track_of.items()}


def embed_clips(spec: str, clips: Sequence[Clip], root: Path,
                progress: Progress | None = None) -> tuple[EmbedderRun, np.ndarray, dict[str, int]]:
    """Open (or create) the eval store of ``spec``, embed the clips it lacks, and load every clip's vector.

    Returns the run record, the vectors (m, dim) float32 and clip id → row. Raises MissingWeightsError /
    MissingDependencyError / UnknownEmbedderError when the embedder cannot be built and clips need it.
    """
    from tagstore import catalogue as cat
    from tagstore.store import Store

    path = store_dir(root, spec)
    run = EmbedderRun(spec, str(path))
    store = Store.open(path) if cat.catalogue_path(path).exists() else Store.init(path, embedders=spec)
    stale = _stale(store, clips)
    if stale:
        t0 = time.perf_counter()
        report = store.add(stale, progress=progress)
        run.embed_s = time.perf_counter() - t0
        run.embedded = len(report.added) + len(report.updated)
        run.failed = [{k: f[k] for k in ("path", "error", "reason")} for f in report.failed]
    t0 = time.perf_counter()
    X, row = _vectors(store, clips)
    store.close()
    run.load_s, run.dim, run.clips = time.perf_counter() - t0, int(X.shape[1]), len(row)
    return run, X, row


# --- fitting ------------------------------------------------------------------------------------


def _unlabelled(pool: np.ndarray, exclude: set[int], seed: int) -> np.ndarray:
    """Rows of ``pool`` (ascending catalogue rows) for the unlabelled sample, as fit_examples takes it:
    up to UNLABELLED_SAMPLE rows that are not examples, drawn uniformly with ``seed``, in catalogue order."""
    from tagstore.tagging import UNLABELLED_SAMPLE

    rest = pool[~np.isin(pool, list(exclude))] if exclude else pool
    if len(rest) <= UNLABELLED_SAMPLE:
        return rest
    return np.sort(np.random.default_rng(seed).choice(rest, UNLABELLED_SAMPLE, replace=False))


def _methods_for(draw: Draw, methods: Sequence[str]) -> list[str]:
    """The requested methods; the full-train ceiling is always fitted with the probe too."""
    from tagstore.learn import METHODS

    wanted = set(methods) | ({"probe"} if draw.full else set())
    return [m for m in METHODS if m in wanted]


@dataclass(frozen=True)
class _Space:
    """One embedder's vectors as the fits see them: the train split is the catalogue."""

    spec: str
    X: np.ndarray  # (m, d) float32, every kept clip
    row: dict[str, int]  # clip id -> row of X
    pool: np.ndarray  # (n_train,) ascending rows of the train clips
    stats: Any  # CatalogueStats of X[pool]
    X_test: np.ndarray  # (len(plan.eval_ids), d)
    clip_of: dict[int, str]  # train row -> a clip id (for FitRecord)


def _space(spec: str, X: np.ndarray, row: dict[str, int], clips: Sequence[Clip], plan: FewShotPlan) -> _Space:
    from tagstore.learn import CatalogueStats

    train_ids = sorted((c.id for c in clips if c.split == "train"), key=row.__getitem__)
    pool = np.unique(np.array([row[i] for i in train_ids], dtype=np.int64))
    return _Space(spec, X, row, pool, CatalogueStats.from_embeddings(X[pool]),
                  X[[row[i] for i in plan.eval_ids]], {row[i]: i for i in reversed(train_ids)})  # fmt: skip


@dataclass
class _Fitted:
    """What fitting some draws in one space gave (in draw order), and the seconds it took."""

    results: list[Result] = field(default_factory=list)
    records: list[FitRecord] = field(default_factory=list)
    fit_s: float = 0.0
    score_s: float = 0.0


def _fit_draws(sp: _Space, plan: FewShotPlan, draws: Sequence[Draw], methods: Sequence[str], keep_fits: bool,
               step: Callable[[str], None] | None = None) -> _Fitted:  # fmt: skip
    """Fit and score every (draw, method) as add-tag would fit the draw's examples (module docstring)."""
    from tagstore import learn
    from tagstore.tagging import _seed

    out = _Fitted()
    for draw in draws:
        seed = _seed(draw.tag)
        pos = [sp.row[i] for i in draw.pos_ids]
        neg = [sp.row[i] for i in draw.neg_ids]
        unl = _unlabelled(sp.pool, set(pos) | set(neg), seed)
        for method in _methods_for(draw, methods):
            if step:
                step(f"{sp.spec} {method} K={'full' if draw.full else draw.k} {draw.tag}")
            t0 = time.perf_counter()
            model = learn.fit_tag(sp.X[pos], sp.X[neg], sp.X[unl], sp.stats, method=method, seed=seed)
            t1 = time.perf_counter()
            scores = model.score(sp.X_test)
            out.fit_s += t1 - t0
            out.score_s += time.perf_counter() - t1
            out.results.append(protocol.score_draw(plan, draw, scores, sp.spec, method))
            if keep_fits:
                unl_ids = tuple(sp.clip_of[int(r)] for r in unl)
                out.records.append(FitRecord(sp.spec, method, draw, unl_ids, scores, t1 - t0))
    return out


_WORKER: dict[str, Any] = {}
"""A pool worker's share of the work, set once by :func:`_init_worker` (inherited, not pickled, on fork)."""


def _init_worker(spaces: dict[str, _Space], plan: FewShotPlan, methods: Sequence[str], keep_fits: bool) -> None:
    _WORKER.update(spaces=spaces, plan=plan, methods=methods, keep_fits=keep_fits)


def _fit_task(spec: str, draws: Sequence[Draw]) -> _Fitted:
    w = _WORKER
    return _fit_draws(w["spaces"][spec], w["plan"], draws, w["methods"], w["keep_fits"])


def _by_tag(draws: Sequence[Draw]) -> list[list[Draw]]:
    """The plan's draws in runs of one tag (the plan lists each tag's draws together)."""
    runs: list[list[Draw]] = []
    for d in draws:
        if runs and runs[-1][0].tag == d.tag:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def _fit_all(spaces: dict[str, _Space], plan: FewShotPlan, methods: Sequence[str], keep_fits: bool,
             workers: int, progress: Progress | None) -> dict[str, _Fitted]:  # fmt: skip
    """Every space's fits, in plan order: here, or over ``workers`` processes one tag at a time."""
    per_fit = {id(d): len(_methods_for(d, methods)) for d in plan.draws}
    total, done = sum(per_fit.values()) * len(spaces), 0

    def step(item: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, item)
        done += 1

    if workers <= 1:
        out = {spec: _fit_draws(sp, plan, plan.draws, methods, keep_fits, step) for spec, sp in spaces.items()}
        if progress:
            progress(total, total, "done")
        return out
    import multiprocessing as mp
    import sys
    from concurrent.futures import ProcessPoolExecutor

    # fork on Linux (as the corpus renderer does): the spaces reach the workers without pickling and
    # scripts need no __main__ guard. Elsewhere, spawn.
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    tasks = [(spec, chunk) for spec in spaces for chunk in _by_tag(plan.draws)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(spaces, plan, methods, keep_fits)) as pool:  # fmt: skip
        futures = [pool.submit(_fit_task, spec, chunk) for spec, chunk in tasks]
        out = {spec: _Fitted() for spec in spaces}
        for (spec, chunk), fut in zip(tasks, futures):
            part = fut.result()
            acc = out[spec]
            acc.results += part.results
            acc.records += part.records
            acc.fit_s += part.fit_s
            acc.score_s += part.score_s
            if progress:
                done += sum(per_fit[id(d)] for d in chunk)
                progress(done, total, f"{spec} {chunk[0].tag}")
    return out


# --- the whole evaluation -----------------------------------------------------------------------


def _check_settings(embedders: Sequence[str], shots: Sequence[int], draws: int, methods: Sequence[str],
                    neg_per_pos: int | None) -> None:  # fmt: skip
    from tagstore.embedders import parse_specs
    from tagstore.learn import METHODS

    for spec in embedders:
        parse_specs(spec)  # an unknown name is a user error, not a skip
    if not embedders:
        raise InputError("no embedder given; name at least one, e.g. dsp")
    if len(set(embedders)) != len(embedders):
        raise InputError(f"an embedder is named twice in {', '.join(embedders)}; name each once")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputError(f"unknown method {bad[0] if bad else ''!r}; choose from {', '.join(METHODS)}")
    if not shots or any(int(k) < 1 for k in shots):
        raise InputError(f"shots {list(shots)}: give K values of at least 1, e.g. 1,2,5,10,20")
    if draws < 1:
        raise InputError(f"draws={draws}: use at least 1 draw per K")
    if neg_per_pos is not None and neg_per_pos < 0:
        raise InputError(f"neg_per_pos={neg_per_pos}: use 0 or more negatives per positive")


def _embed_all(embedders: Sequence[str], clips: Sequence[Clip], root: Path, progress: Progress | None,
               ) -> tuple[list[tuple[EmbedderRun, np.ndarray, dict[str, int]]], dict[str, str], dict[str, str]]:
    """Each embedder's (run, vectors, clip id → row); the skipped embedders and the dropped clips with why."""
    loaded, skipped, dropped = [], {}, {}
    for spec in embedders:
        try:
            run, X, row = embed_clips(spec, clips, root, progress)
        except (MissingWeightsError, MissingDependencyError, UnknownEmbedderError) as exc:
            skipped[spec] = str(exc)
            log.warning("skipping embedder %s: %s", spec, exc)
            continue
        for f in run.failed:
            dropped.setdefault(f["path"], f"{spec}: {f['reason']}")
        for c in clips:
            if c.id not in row:
                dropped.setdefault(c.id, f"{spec}: no vector in {run.store}")
        loaded.append((run, X, row))
    if not loaded:
        raise EmbedderError("no embedder could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if dropped:  # every embedder is evaluated on the same clips, so their curves compare
        log.warning("%d clip(s) could not be embedded and are left out, e.g. %s (%s)",
                    len(dropped), *next(iter(dropped.items())))  # fmt: skip
    return loaded, skipped, dropped


def evaluate(
    labels_csv: str | os.PathLike,
    embedders: Sequence[str] = ("dsp",),
    shots: Sequence[int] = DEFAULT_SHOTS,
    draws: int = 10,
    methods: Sequence[str] = DEFAULT_METHODS,
    seed: int = 0,
    store_root: str | os.PathLike | None = None,
    progress: Progress | None = None,
    *,
    neg_per_pos: int | None = DEFAULT_NEG_PER_POS,
    keep_fits: bool = False,
    workers: int = 1,
) -> EvalResult:
    """Run the few-shot protocol on a labelled corpus with tagstore's own tag learning.

    labels_csv: a labels.csv (columns path, track, tags, split; paths relative to its folder).
    embedders: specs, one eval store each (``["dsp", "musicnn"]`` or ``"dsp,musicnn"``; the list item
    ``"dsp,musicnn"`` is one combined layout); one whose weights or dependencies are missing is skipped
    with a warning naming the fix. shots: the K values. draws: draws per K. methods: any of "probe",
    "prototype", "ensemble". seed: the protocol's draws. store_root: folder of the eval stores (default
    ``<csv dir>/.tagstore-eval``). progress: ``(done, total, item)``, for embedding, then fitting.
    neg_per_pos: labelled train negatives per positive in each draw (None: every train clip without the
    tag). keep_fits: also return every fit's examples and test scores (:class:`FitRecord`).
    workers: processes that fit, one tag at a time (the results do not depend on it).

    The fits are small (a few hundred rows), so a multi-threaded BLAS mostly waits on itself: with
    ``OPENBLAS_NUM_THREADS=1`` set before numpy loads (the CLI does) and ``workers`` = cores, they run
    several times faster. Raises InputError for a bad table or setting, UnknownEmbedderError for an
    unregistered embedder name, EmbedderError when no embedder can run.
    """
    t_start = time.perf_counter()
    embedders = [e.strip() for e in (embedders.split(",") if isinstance(embedders, str) else embedders)]
    methods = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    embedders = [e for e in embedders if e]
    _check_settings(embedders, shots, draws, methods, neg_per_pos)
    csv_path = Path(labels_csv).expanduser().absolute()
    clips = read_clips(csv_path)
    root = Path(store_root).expanduser().absolute() if store_root else csv_path.parent / STORE_DIR
    loaded, skipped, dropped = _embed_all(embedders, clips, root, progress)
    runs = [run for run, _, _ in loaded]
    kept = [c for c in clips if c.id not in dropped]
    plan = protocol.few_shot_plan([LabelledClip(c.id, c.track, c.tags, c.split) for c in kept],
                                  shots=[int(k) for k in shots], n_draws=draws, seed=seed,
                                  neg_per_pos=neg_per_pos)  # fmt: skip
    if not plan.tags:
        raise InputError(f"no tag in {csv_path} has positives and negatives in both the train and the test "
                         "split; label more clips or move tracks between splits")
    spaces = {run.spec: _space(run.spec, X, row, kept, plan) for run, X, row in loaded}
    fitted = _fit_all(spaces, plan, methods, keep_fits, workers, progress)
    results, records = [], []
    for run in runs:
        f = fitted[run.spec]
        results += f.results
        records += f.records
        run.fit_s, run.score_s, run.fits = f.fit_s, f.score_s, len(f.results)
    settings = {"shots": sorted({int(k) for k in shots}), "draws": draws, "methods": list(methods),
                "seed": seed, "neg_per_pos": neg_per_pos}  # fmt: skip
    return EvalResult(csv_path, settings, plan, results, protocol.aggregate(results), runs, skipped,
                      [{"path": p, "reason": r} for p, r in dropped.items()], time.perf_counter() - t_start,
                      records if keep_fits else None)  # fmt: skip
