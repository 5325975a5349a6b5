"""The evaluation's fits: every draw fitted exactly as ``tagstore add-tag`` fits a tag.

The train split is the catalogue: its statistics standardise, and the unlabelled sample is drawn from
it by :func:`tagstore.learning.fit.fit_examples` (one fixed order, examples left out) —
the function ``add-tag`` calls too. The test split is scored and never seen by a fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagstore.evaluation import protocol
from tagstore.evaluation.labels import Clip
from tagstore.evaluation.protocol import Draw, FewShotPlan, Result
from tagstore.learning import METHODS, CatalogueStats, TagModel
from tagstore.learning.fit import fit_examples
from tagstore.store import Progress


@dataclass(frozen=True)
class FitRecord:
    """One fit (kept with ``keep_fits=True``): the examples it saw and its scores on ``plan.eval_ids``."""

    embedder: str
    method: str
    draw: Draw
    unlabelled_ids: tuple[str, ...]
    scores: np.ndarray  # (len(plan.eval_ids),) float32
    fit_s: float  # seconds in fit_examples
    threshold: float = float("nan")  # the model's threshold (predicted: scores >= threshold)


@dataclass(frozen=True)
class Space:
    """One embedder's vectors as the fits see them: the train split is the catalogue."""

    spec: str
    X: np.ndarray  # (m, d) float32, every kept clip, in catalogue (track id) order
    row: dict[str, int]  # clip id -> row of X
    pool: np.ndarray  # (n_train,) ascending rows of the train clips
    stats: CatalogueStats  # of X[pool]
    X_test: np.ndarray  # (len(plan.eval_ids), d)
    clip_of: dict[int, str]  # train row -> a clip id (for FitRecord)
    track_of: dict[str, str] = field(default_factory=dict)  # clip id -> its track (CV groups; default: the clip)


def space(spec: str, X: np.ndarray, row: dict[str, int], clips: Sequence[Clip], plan: FewShotPlan) -> Space:
    """The fits' view of one embedder's vectors ``X`` (m, d)."""
    train_ids = sorted((c.id for c in clips if c.split == "train"), key=row.__getitem__)
    pool = np.unique(np.array([row[i] for i in train_ids], dtype=np.int64))
    return Space(spec, X, row, pool, CatalogueStats.from_embeddings(X[pool]),
                 X[[row[i] for i in plan.eval_ids]], {row[i]: i for i in reversed(train_ids)},
                 {c.id: c.track for c in clips})  # fmt: skip


def fit_draw(sp: Space, draw: Draw, method: str) -> tuple[TagModel, np.ndarray]:
    """A draw's model (fitted as add-tag fits its examples) and the unlabelled rows it sampled."""
    pos = [sp.row[i] for i in draw.pos_ids]
    neg = [sp.row[i] for i in draw.neg_ids]
    rows: Callable[[np.ndarray], np.ndarray] = lambda r: sp.X[r]  # noqa: E731
    groups = [("track", sp.track_of.get(i, i)) for i in (*draw.pos_ids, *draw.neg_ids)]
    return fit_examples(draw.tag, sp.X[pos], sp.X[neg], sp.pool, rows, set(pos) | set(neg), sp.stats, method,
                        groups=groups)  # fmt: skip


def methods_for(draw: Draw, methods: Sequence[str]) -> list[str]:
    """The requested methods; the full-train ceiling is always fitted with the probe too."""
    wanted = set(methods) | ({"probe"} if draw.full else set())
    return [m for m in METHODS if m in wanted]


@dataclass
class Fitted:
    """What fitting some draws in one space gave (in draw order), and the seconds it took."""

    results: list[Result] = field(default_factory=list)
    records: list[FitRecord] = field(default_factory=list)
    fit_s: float = 0.0
    score_s: float = 0.0


def fit_draws(sp: Space, plan: FewShotPlan, draws: Sequence[Draw], methods: Sequence[str], keep_fits: bool,
              step: Callable[[str], None] | None = None) -> Fitted:  # fmt: skip
    """Fit and score every (draw, method) of ``draws``."""
    out = Fitted()
    for draw in draws:
        for method in methods_for(draw, methods):
            if step:
                step(f"{sp.spec} {method} K={'full' if draw.full else draw.k} {draw.tag}")
            t0 = time.perf_counter()
            model, unl = fit_draw(sp, draw, method)
            t1 = time.perf_counter()
            scores = model.score(sp.X_test)
            out.fit_s += t1 - t0
            out.score_s += time.perf_counter() - t1
            out.results.append(protocol.score_draw(plan, draw, scores, sp.spec, method, model.threshold))
            if keep_fits:
                unl_ids = tuple(sp.clip_of[int(r)] for r in unl)
                out.records.append(FitRecord(sp.spec, method, draw, unl_ids, scores, t1 - t0, model.threshold))
    return out


_WORKER: dict[str, Any] = {}
"""A pool worker's share of the work, set once by :func:`_init_worker` (inherited, not pickled, on fork)."""


def _init_worker(spaces: dict[str, Space], plan: FewShotPlan, methods: Sequence[str], keep_fits: bool) -> None:
    _WORKER.update(spaces=spaces, plan=plan, methods=methods, keep_fits=keep_fits)


def _fit_task(spec: str, draws: Sequence[Draw]) -> Fitted:
    w = _WORKER
    return fit_draws(w["spaces"][spec], w["plan"], draws, w["methods"], w["keep_fits"])


def _by_tag(draws: Sequence[Draw]) -> list[list[Draw]]:
    """The plan's draws in runs of one tag (the plan lists each tag's draws together)."""
    runs: list[list[Draw]] = []
    for d in draws:
        if runs and runs[-1][0].tag == d.tag:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def fit_all(spaces: dict[str, Space], plan: FewShotPlan, methods: Sequence[str], keep_fits: bool,
            workers: int, progress: Progress | None) -> dict[str, Fitted]:  # fmt: skip
    """Every space's fits, in plan order: here, or over ``workers`` processes one tag at a time."""
    per_fit = {id(d): len(methods_for(d, methods)) for d in plan.draws}
    total, done = sum(per_fit.values()) * len(spaces), 0

    def step(item: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, item)
        done += 1

    if workers <= 1:
        out = {spec: fit_draws(sp, plan, plan.draws, methods, keep_fits, step) for spec, sp in spaces.items()}
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
        out = {spec: Fitted() for spec in spaces}
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
