"""The labelled demo corpus: synthesised music with exact multi-label tags, made from PyPI packages only.

Compositions are written with pretty_midi and rendered through pretty_midi's General MIDI soundfont
with midirenderer (no system synthesiser). Tags are exact by construction: style, metre, tempo band,
mode, drums, instruments (one GM program each) and instrument families, with a long tail of rare ones.

Layout written by :func:`make_corpus`::

    out_dir/labels.csv        path,track,tags,split   (path relative to the CSV; tags ';'-separated)
    out_dir/audio/<clip>.wav  mono, ``sample_rate`` Hz, 16-bit, ``clip_s`` seconds
    out_dir/midi/<clip>.mid   the MIDI the audio was rendered from
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from tagstore.corpus.plan import ClipPlan, CorpusPlan, Part, all_tags, plan_corpus, split_by_track
from tagstore.errors import InputError
from tagstore.evaluation.labels import LABEL_COLUMNS
from tagstore.fileio import atomic_write

__all__ = [
    "ClipPlan", "CorpusPlan", "CorpusSummary", "Part", "all_tags", "labels_csv_text",
    "make_corpus", "plan_corpus", "split_by_track",
]

AUDIO_FORMATS = ("wav", "flac")
MIN_CLIP_S = 3.0  # every part plays within its first 2 quarters, 2.1 s at the slowest tempo


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`make_corpus` wrote and how long it took."""

    out_dir: Path
    labels_csv: Path
    n_clips: int
    n_tracks: int
    n_train: int  # clips
    n_test: int  # clips
    tag_counts: dict[str, int]  # clips per tag, most frequent first
    sample_rate: int  # Hz
    clip_s: float  # seconds
    workers: int
    seconds: float  # wall-clock time of the whole run

    @property
    def clips_per_second(self) -> float:
        return self.n_clips / self.seconds if self.seconds > 0 else float("inf")


def labels_csv_text(plan: CorpusPlan, audio_format: str = "wav") -> str:
    """labels.csv for ``plan`` as text: a header, then one row per clip in path order, '\\n' endings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for clip in sorted(plan.clips, key=lambda c: c.audio_name(audio_format)):
        writer.writerow((clip.audio_name(audio_format), clip.track, ";".join(clip.tags), clip.split))
    return buf.getvalue()


def _check_args(n_clips: int, clip_s: float, sample_rate: int, audio_format: str) -> None:
    if n_clips < 1:
        raise InputError(f"n_clips={n_clips}: ask for at least 1 clip")
    if not MIN_CLIP_S <= clip_s <= 60.0:
        raise InputError(f"clip_s={clip_s}: use a clip length from {MIN_CLIP_S:g} to 60 seconds")
    if not 8000 <= sample_rate <= 48000:
        raise InputError(f"sample_rate={sample_rate}: use 8000 to 48000 Hz")
    if audio_format not in AUDIO_FORMATS:
        raise InputError(f"audio_format={audio_format!r}: use one of {', '.join(AUDIO_FORMATS)}")


def _pool_context():
    # fork on Linux: workers need nothing from the parent but the plan, and fork spares callers the
    # `if __name__ == "__main__":` guard that spawn demands of a script. Elsewhere, spawn.
    methods = get_all_start_methods()
    return get_context("fork" if sys.platform == "linux" and "fork" in methods else "spawn")


def make_corpus(out_dir: str | os.PathLike, n_clips: int = 400, seed: int = 0, clip_s: float = 10.0,
                sample_rate: int = 22050, progress: Callable[[int, int], None] | None = None, *,
                test_fraction: float = 0.3, workers: int | None = None,
                audio_format: str = "wav") -> CorpusSummary:
    """Synthesise a labelled corpus of ``n_clips`` clips of ``clip_s`` seconds into ``out_dir``.

    Deterministic: the same arguments give a byte-identical labels.csv, MIDI and audio (whatever
    ``workers``). Rendering runs in a process pool of ``workers`` processes (default ``os.cpu_count()``;
    1 renders in this process). ``progress(done, total)`` is called after each clip. Existing files of
    the same names are replaced; labels.csv is written last, so it only lists finished clips.
    """
    _check_args(n_clips, clip_s, sample_rate, audio_format)
    from tagstore.corpus.render import render_clip, soundfont_path

    soundfont_path()  # fail early, in this process, if pretty_midi or its soundfont is missing
    start = time.perf_counter()
    plan = plan_corpus(n_clips, seed, clip_s, test_fraction)
    out = Path(out_dir)
    for sub in ("audio", "midi"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    total = len(plan.clips)
    if workers == 1:
        for done, clip in enumerate(plan.clips, 1):
            render_clip(clip, out, sample_rate, audio_format)
            if progress:
                progress(done, total)
    else:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            jobs = [pool.submit(render_clip, c, out, sample_rate, audio_format) for c in plan.clips]
            for done, job in enumerate(jobs, 1):
                job.result()
                if progress:
                    progress(done, total)
    labels = out / "labels.csv"
    atomic_write(labels, labels_csv_text(plan, audio_format))
    splits = Counter(c.split for c in plan.clips)
    return CorpusSummary(out, labels, total, len(plan.tracks), splits["train"], splits["test"],
                         plan.tag_counts(), sample_rate, clip_s, workers, time.perf_counter() - start)
