"""Eval stores: one ordinary tagstore store per embedder spec, beside the label CSV, made through :mod:`tagstore.api`.

A second run embeds only new or changed clips (ingest's own skip rule: same path, size and mtime).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import api, audio
from tagstore import catalogue as cat
from tagstore.catalogue import tracks as track_sql
from tagstore.evaluation.labels import Clip
from tagstore.store import Progress, Store

STORE_DIR = ".tagstore-eval"
"""Folder beside the label CSV that holds one eval store per embedder spec."""


@dataclass
class EmbedderRun:
    """What evaluating one embedder spec did: its store, what it embedded, and where the time went (s)."""

    spec: str
    store: str
    dim: int = 0
    clips: int = 0  # clips with a vector in the store
    embedded: int = 0  # clips embedded by this run (0 when the store already held them all)
    failed: list[dict[str, str]] = field(default_factory=list)  # [{path, error, reason}]
    embed_s: float = 0.0  # api.add, 0 when nothing new
    load_s: float = 0.0  # reading the vectors into memory
    fit_s: float = 0.0  # fit_examples calls
    score_s: float = 0.0  # scoring the test split
    fits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_dir(root: Path, spec: str) -> Path:
    """The eval store of ``spec`` under ``root`` (characters other than ``[A-Za-z0-9._=,-]`` become ``_``)."""
    return root / re.sub(r"[^A-Za-z0-9._=,-]+", "_", spec.strip())


def _stale(store: Store, clips: Sequence[Clip]) -> list[str]:
    """Clip paths the store lacks or holds with another size/mtime (ingest's own skip rule)."""
    with store.reader() as con:
        known = {p: (s, m) for _, p, _, s, m in track_sql.fingerprints(con)}
    out = []
    for c in clips:
        st = os.stat(c.id)
        if known.get(c.id) != (st.st_size, st.st_mtime_ns):
            out.append(c.id)
    return out


def _vectors(store: Store, clips: Sequence[Clip]) -> tuple[np.ndarray, dict[str, int]]:
    """The stored vectors of ``clips`` (m, dim) float32 in track id order, and clip id → row.

    Clips are matched by path, else by content (a duplicate file is stored once, under the other path).
    """
    with store.reader() as con:
        rows = track_sql.embedded_tracks(con)
        by_path = {p: i for i, p, _ in rows}
        by_hash = {h: i for i, _, h in rows}
        track_of: dict[str, int] = {}
        for c in clips:
            tid = by_path.get(c.id)
            if tid is None:
                tid = by_hash.get(audio.file_hash(c.id))
            if tid is not None:
                track_of[c.id] = tid
        ids = sorted(set(track_of.values()))
        X = store.embeddings(ids, con) if ids else np.zeros((0, store.layout.dim), np.float32)
    pos = {tid: i for i, tid in enumerate(ids)}
    return X, {cid: pos[tid] for cid, tid in track_of.items()}


def embed_clips(spec: str, clips: Sequence[Clip], root: Path,
                progress: Progress | None = None) -> tuple[EmbedderRun, np.ndarray, dict[str, int]]:  # fmt: skip
    """Open (or create) the eval store of ``spec``, embed the clips it lacks, and load every clip's vector.

    Returns the run record, the vectors (m, dim) float32 and clip id → row. Raises MissingWeightsError /
    MissingDependencyError / UnknownEmbedderError when the embedder cannot be built and clips need it.
    """
    path = store_dir(root, spec)
    run = EmbedderRun(spec, str(path))
    store = api.open(path) if cat.catalogue_path(path).exists() else api.init(path, embedders=spec)
    stale = _stale(store, clips)
    if stale:
        t0 = time.perf_counter()
        report = api.add(store, stale, progress=progress)
        run.embed_s = time.perf_counter() - t0
        run.embedded = len(report.added) + len(report.updated)
        run.failed = [{k: f[k] for k in ("path", "error", "reason")} for f in report.failed]
    t0 = time.perf_counter()
    X, row = _vectors(store, clips)
    store.close()
    run.load_s, run.dim, run.clips = time.perf_counter() - t0, int(X.shape[1]), len(row)
    return run, X, row
