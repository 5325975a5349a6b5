"""Few-shot evaluation of tagstore's own tag learning on a labelled corpus (after Ma & Lerch 2024).

``evaluate(labels_csv, embedders=["dsp"])`` reads a label table (:mod:`.labels`), embeds its clips once
per embedder spec into an *eval store* (:mod:`.stores`: ``<csv dir>/.tagstore-eval/<spec>``, a normal
tagstore store made through :mod:`tagstore.api`, so a second run embeds only new or changed clips),
loads the vectors into memory once, and runs the protocol of :mod:`.protocol`: for each tag, K and draw,
K train positives (distinct tracks first) and ``neg_per_pos * K`` train negatives, each draw fitted
exactly as ``tagstore add-tag`` fits a tag (:mod:`.fits`), then scored on the test split, which no fit
ever sees. Reported: macro AP, ROC-AUC and F1 of the predicted set at each fit's threshold, over the tags
with positives and negatives in both splits, mean ± std over draws, per-tag AP, and the full-train ceiling (every train clip labelled; always fitted
with ``probe``, and with each requested method). :mod:`.report` writes the HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import parse_specs
from tagstore.errors import EmbedderError, InputError, MissingDependencyError, MissingWeightsError, UnknownEmbedderError
from tagstore.evaluation import protocol
from tagstore.evaluation.fits import FitRecord, fit_all, space
from tagstore.evaluation.labels import Clip, read_clips
from tagstore.evaluation.protocol import DEFAULT_SHOTS, CurvePoint, FewShotPlan, LabelledClip, Result
from tagstore.evaluation.report import write_report
from tagstore.evaluation.stores import STORE_DIR, EmbedderRun, embed_clips
from tagstore.fileio import atomic_write
from tagstore.learning import METHODS
from tagstore.store import Progress

log = logging.getLogger("tagstore")

DEFAULT_METHODS = ("probe", "prototype", "ensemble")
DEFAULT_NEG_PER_POS = 1


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
        """The HTML report with learning curves (see :func:`tagstore.evaluation.report.write_report`) and
        ``eval.json`` (:meth:`to_dict`) in ``out_dir``; returns index.html's path."""
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
        atomic_write(page.with_name("eval.json"), json.dumps(self.to_dict(), indent=1, default=str))
        return page


# --- the whole evaluation -----------------------------------------------------------------------


def _check_settings(embedders: Sequence[str], shots: Sequence[int], draws: int, methods: Sequence[str],
                    neg_per_pos: int | None) -> None:  # fmt: skip
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
    spaces = {run.spec: space(run.spec, X, row, kept, plan) for run, X, row in loaded}
    fitted = fit_all(spaces, plan, methods, keep_fits, workers, progress)
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
