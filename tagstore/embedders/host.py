"""The embedding host: file -> windows -> each embedder -> pooled, concatenated track vector.

A file is decoded once, in chunks, and resampled to every embedder's rate on the fly
(``audio.stream_multi``); windows are cut as the samples arrive, so memory stays bounded by the
chunk size, not the file length. A file shorter than one window is padded the embedder's way
(repetition by default); after at least one full window, a trailing part shorter than a window
is not embedded (as musicnn and VGGish do). An embedder may ask for zeros before the track
(``lead_in_samples``) and after it (``lead_out_samples``) to line windows up with its own framing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tagstore import audio
from tagstore.embedders import Embedder, create, parse_specs
from tagstore.errors import EmptyAudioError, NonFiniteAudioError, SilentAudioError, TagstoreError, TooShortAudioError
from tagstore.layout import Block, Layout

SILENCE_PEAK = 1e-4
"""A file whose absolute peak stays below this (-80 dBFS) is refused as silent."""
DECODE_AHEAD = 4
"""Files each decoding worker may have decoded ahead of the embedder (memory: a few decoded files each)."""

Item = TypeVar("Item")

MAX_PEAK = 1e4
"""A file with a sample beyond this (+80 dBFS: far out of range, not audio) is refused."""


@dataclass
class TrackVector:
    """One file's embedding: ``vector`` is ``(layout.dim,)`` float32 (raw pooled blocks, concatenated)."""

    vector: np.ndarray
    duration_s: float
    model_tags: dict[str, np.ndarray] = field(default_factory=dict)
    """Embedder name -> ``(len(tag_names),)`` mean tag probabilities, for backends with a tag head."""


@dataclass
class DecodedAudio:
    """A whole file decoded once: mono float32 ``(n,)`` at each embedder rate (Hz), for :meth:`TrackEmbedder.embed_decoded`.

    Made by :meth:`TrackEmbedder.decode` (in a worker process or a Ray task, ahead of the embedding);
    ``peak`` is the absolute peak at the lowest rate, ``duration_s`` the length in seconds.
    """

    name: str
    samples: dict[int, np.ndarray]
    duration_s: float
    peak: float


class _Windower:
    """Cuts a stream of samples into ``(m, win)`` windows every ``hop`` samples."""

    def __init__(self, win: int, hop: int) -> None:
        self.win, self.hop = win, hop
        self.buf = np.zeros(0, dtype=np.float32)
        self.emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self.buf, chunk]) if self.buf.size else chunk
        if buf.shape[0] < self.win:
            self.buf = buf
            return np.zeros((0, self.win), dtype=np.float32)
        m = (buf.shape[0] - self.win) // self.hop + 1
        windows = sliding_window_view(buf, self.win)[:: self.hop][:m].copy()
        self.buf = buf[m * self.hop :].copy()
        self.emitted += m
        return windows


class _BlockRun:
    """Per-embedder state while one file streams through it."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.windower = _Windower(embedder.window_samples, embedder.hop_samples)
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.embeddings: list[np.ndarray] = []
        self.tags: list[np.ndarray] = []
        self.lead_in = int(embedder.lead_in_samples)
        self.lead_out = int(embedder.lead_out_samples)
        if self.lead_in:
            self.windower.push(np.zeros(self.lead_in, dtype=np.float32))

    def push(self, chunk: np.ndarray) -> None:
        windows = self.windower.push(chunk)
        if windows.shape[0]:
            self.pending.append(windows)
            self.n_pending += windows.shape[0]
        if self.n_pending >= self.embedder.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self.n_pending:
            return
        batch = np.concatenate(self.pending)
        self.pending, self.n_pending = [], 0
        for start in range(0, batch.shape[0], self.embedder.batch_size):
            emb, tags = self.embedder.embed_tags(batch[start : start + self.embedder.batch_size])
            self.embeddings.append(np.asarray(emb, dtype=np.float32))
            if tags is not None:
                self.tags.append(np.asarray(tags, dtype=np.float32))

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.lead_out:
            self.push(np.zeros(self.lead_out, dtype=np.float32))
        if self.windower.emitted == 0 and not self.embeddings:
            end = self.windower.buf.shape[0] - self.lead_out
            clip = self.windower.buf[self.lead_in : end]  # a short clip is padded without its lead-in and lead-out
            if clip.size == 0:
                raise ValueError("no samples")
            self.pending.append(self.embedder.pad_short(clip)[None, :])
            self.n_pending += 1
        self._flush()
        window_emb = np.concatenate(self.embeddings)
        pooled = np.asarray(self.embedder.pool(window_emb), dtype=np.float32)
        tags = np.concatenate(self.tags).mean(axis=0) if self.tags else None
        return pooled, tags


def _check_samples(path: str | Path, x: np.ndarray, native: bool) -> None:
    """NonFiniteAudioError for NaN / infinite samples (or ones far beyond full scale), before any embedder sees them."""
    peak = float(np.max(np.abs(x)))
    if np.isfinite(peak) and peak <= MAX_PEAK:
        return
    where = "" if native else " after resampling"
    what = "NaN or infinite samples" if not np.isfinite(peak) else f"samples far beyond full scale (peak {peak:.3g})"
    raise NonFiniteAudioError(
        f"{audio.display_path(path)} holds {what}{where}; it is damaged or not audio: re-export it, or leave it out"
    )


class TrackEmbedder:
    """Embeds files with one or more embedders; the output follows :attr:`layout`."""

    def __init__(self, embedders: Sequence[Embedder], chunk_s: float = 20.0) -> None:
        if not embedders:
            raise ValueError("at least one embedder is needed")
        self.embedders = list(embedders)
        self.chunk_s = chunk_s
        self.layout = Layout(tuple(Block(**e.describe()) for e in self.embedders))
        self.min_duration_s = max(e.min_duration_s for e in self.embedders)

    @classmethod
    def from_spec(cls, spec: str | list[str], runtime: Mapping[str, Any] | None = None) -> TrackEmbedder:
        """Build from ``"dsp"`` / ``"dsp,musicnn:model=MTT"``; imports only the named backends.

        ``runtime``: ``weights_dir`` / ``threads`` for the backends that take them.
        """
        return cls([create(name, opts, runtime) for name, opts in parse_specs(spec)])

    @classmethod
    def from_layout(cls, layout: Layout, runtime: Mapping[str, Any] | None = None) -> TrackEmbedder:
        """Rebuild the embedders of a stored layout and check that they still compute the same vectors."""
        built = cls.from_spec([b.spec for b in layout.blocks], runtime)
        built.check(layout)
        return built

    def check(self, layout: Layout) -> None:
        """LayoutMismatchError unless these embedders (as they describe themselves now) compute ``layout``."""
        layout.check_same(Layout(tuple(Block(**e.describe()) for e in self.embedders)))

    def embed_file(self, path: str | Path) -> TrackVector:
        """Decode, resample, window, embed and pool one file (bounded memory)."""
        info = audio.probe(path)
        if info.frames is not None and info.duration_s < self.min_duration_s:
            raise TooShortAudioError(self._too_short(path, info.duration_s))
        rates = sorted({e.sample_rate for e in self.embedders})
        runs = [_BlockRun(e) for e in self.embedders]
        total, peak = 0, 0.0
        for chunks in audio.stream_multi(path, rates, chunk_s=self.chunk_s):
            first = chunks[rates[0]]
            total += first.shape[0]
            for rate, part in chunks.items():
                if part.size:
                    _check_samples(path, part, rate == rates[0])
            if first.size:
                peak = max(peak, float(np.max(np.abs(first))))
            for run in runs:
                run.push(chunks[run.embedder.sample_rate])
        return self._finish(path, runs, total / rates[0], peak)

    @property
    def rates(self) -> list[int]:
        """The distinct sample rates (Hz) of the embedders, ascending."""
        return sorted({e.sample_rate for e in self.embedders})

    def decode(self, path: str | Path) -> DecodedAudio:
        """Decode and resample a whole file for :meth:`embed_decoded` (:func:`decode` with these embedders' rates)."""
        return decode(path, self.rates, self.min_duration_s, self.chunk_s)

    def embed_decoded(self, decoded: DecodedAudio) -> TrackVector:
        """Embed a file decoded by :meth:`decode` (possibly in another process); equals :meth:`embed_file`."""
        missing = [r for r in self.rates if r not in decoded.samples]
        if missing:
            raise ValueError(f"{decoded.name}: decoded audio lacks the rate(s) {missing} Hz these embedders need")
        runs = [_BlockRun(e) for e in self.embedders]
        for run in runs:
            rate = run.embedder.sample_rate
            x, step = decoded.samples[rate], max(1, int(self.chunk_s * rate))
            for start in range(0, x.shape[0], step):  # in chunks, so windowing memory stays bounded
                run.push(x[start : start + step])
        return self._finish(decoded.name, runs, decoded.duration_s, decoded.peak)

    @property
    def uses_cuda(self) -> bool:
        """Whether any backend runs on a CUDA device (then decoding in worker processes keeps it fed)."""
        return any(getattr(getattr(e, "device", None), "type", None) == "cuda" for e in self.embedders)

    def embed_ahead(
        self, items: Iterable[Item], path_of: Callable[[Item], str | Path], workers: int = 0
    ) -> Iterator[tuple[Item, TrackVector | TagstoreError]]:
        """Embed the file of each item, in order; yields ``(item, vector)``, or ``(item, error)`` for a file
        that cannot be embedded (a :class:`~tagstore.errors.TagstoreError`, e.g. silent or unreadable).

        ``workers`` > 0 decodes in that many processes, up to :data:`DECODE_AHEAD` files each ahead of the
        embedder, so a GPU does not wait for decoding; 0 streams each file here (:meth:`embed_file`).
        Items are pulled from ``items`` only as far ahead as that.
        """
        if workers <= 0:
            for item in items:
                try:
                    yield item, self.embed_file(path_of(item))
                except TagstoreError as exc:
                    yield item, exc
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child of a process that has initialised CUDA cannot use it, and must not try.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        queue: deque[tuple[Item, Any]] = deque()
        source = iter(items)
        args = (self.rates, self.min_duration_s, self.chunk_s)

        def submit() -> None:
            for item in source:
                queue.append((item, pool.submit(decode, path_of(item), *args)))
                return

        try:
            for _ in range(workers * DECODE_AHEAD):
                submit()
            while queue:
                item, future = queue.popleft()
                submit()
                try:
                    yield item, self.embed_decoded(future.result())
                except TagstoreError as exc:
                    yield item, exc
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def embed_audio(self, samples: np.ndarray, sample_rate: int, name: str = "<audio>") -> TrackVector:
        """Embed mono float32 ``(n,)`` audio at ``sample_rate`` Hz held in memory."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected mono audio of shape (n,), got {samples.shape}")
        runs = [_BlockRun(e) for e in self.embedders]
        if samples.size:
            _check_samples(name, samples, True)
        for run in runs:
            resampled = audio.resample(samples, sample_rate, run.embedder.sample_rate)
            if resampled.size:
                _check_samples(name, resampled, False)
            run.push(resampled)
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        return self._finish(name, runs, samples.shape[0] / sample_rate, peak)

    def _finish(self, path: str | Path, runs: list[_BlockRun], duration_s: float, peak: float) -> TrackVector:
        if duration_s <= 0:
            raise EmptyAudioError(f"{path} holds no audio samples; remove it or re-export it")
        if duration_s < self.min_duration_s:
            raise TooShortAudioError(self._too_short(path, duration_s))
        if peak < SILENCE_PEAK:
            raise SilentAudioError(
                f"{path} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS); nothing to describe, leave it out"
            )
        parts, tags = [], {}
        for run in runs:
            pooled, run_tags = run.finish()
            parts.append(pooled)
            if run_tags is not None:
                tags[run.embedder.name] = run_tags
        vector = np.concatenate(parts).astype(np.float32)
        if not np.all(np.isfinite(vector)):
            raise ValueError(f"non-finite embedding for {path}")
        return TrackVector(vector=vector, duration_s=duration_s, model_tags=tags)

    def _too_short(self, path: str | Path, duration_s: float) -> str:
        return _too_short(path, duration_s, self.min_duration_s)


def _too_short(path: str | Path, duration_s: float, min_duration_s: float) -> str:
    return f"{path} is too short ({duration_s:.2f} s); the embedders need at least {min_duration_s:.2f} s of audio"


def decode(path: str | Path, rates: Sequence[int], min_duration_s: float, chunk_s: float = 20.0) -> DecodedAudio:
    """Decode a whole file once to mono float32 at each of ``rates`` (Hz): the samples :meth:`TrackEmbedder.embed_file`
    streams, for :meth:`TrackEmbedder.embed_decoded` in another process (a decoding worker, a Ray task).

    Needs no embedder (so no weights or torch). Memory grows with the file (5 minutes at 16 + 48 kHz:
    ~80 MB). Raises the audio errors of :mod:`tagstore.audio`, and TooShortAudioError.
    """
    info = audio.probe(path)
    if info.frames is not None and info.duration_s < min_duration_s:
        raise TooShortAudioError(_too_short(path, info.duration_s, min_duration_s))
    rates = sorted(set(rates))
    parts: dict[int, list[np.ndarray]] = {r: [] for r in rates}
    peak = 0.0
    for chunks in audio.stream_multi(path, rates, chunk_s=chunk_s):
        for rate in rates:
            parts[rate].append(chunks[rate])
        if chunks[rates[0]].size:
            peak = max(peak, float(np.max(np.abs(chunks[rates[0]]))))
    samples = {r: np.concatenate(p) if p else np.zeros(0, np.float32) for r, p in parts.items()}
    return DecodedAudio(str(path), samples, samples[rates[0]].shape[0] / rates[0], peak)
