"""Rendering composed clips to audio: General MIDI soundfont (pretty_midi's TimGM6mb.sf2) through
midirenderer, then mono, resampling (soxr), exact length, a short fade-out and loudness normalisation.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from tagstore.corpus.compose import midi_bytes
from tagstore.corpus.plan import ClipPlan
from tagstore.fileio import atomic_write

FADE_S = 0.02  # fade-out at the cut, seconds
PEAK = 0.98  # sample peak ceiling after loudness normalisation (full scale = 1)
_SUBTYPE = {"wav": "PCM_16", "flac": "PCM_16"}

_soundfont: bytes | None = None  # per process: the soundfont bytes, read once


def soundfont_path() -> Path:
    """The General MIDI soundfont shipped inside the pretty_midi package."""
    from tagstore.corpus.compose import _import_pretty_midi

    path = Path(_import_pretty_midi().__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():  # pragma: no cover - a broken pretty_midi install
        from tagstore.errors import MissingDependencyError

        raise MissingDependencyError(f"no soundfont at {path}: reinstall pretty_midi")
    return path


def _sf2() -> bytes:
    global _soundfont
    if _soundfont is None:
        _soundfont = soundfont_path().read_bytes()
    return _soundfont


def render_audio(midi: bytes, clip_s: float, sample_rate: int, loudness_db: float) -> np.ndarray:
    """Render MIDI bytes to mono float32 audio at ``sample_rate`` Hz, exactly ``clip_s`` seconds long,
    normalised to ``loudness_db`` dBFS RMS (peaks held under ``PEAK``). Returns shape (n_samples,)."""
    try:
        import midirenderer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from tagstore.errors import MissingDependencyError

        raise MissingDependencyError(
            "the demo corpus needs midirenderer: pip install 'tagstore[corpus]'") from exc
    import soundfile as sf
    import soxr

    wav, sr = sf.read(io.BytesIO(midirenderer.render_wave_from(_sf2(), midi)), dtype="float32")
    x = wav.mean(axis=1) if wav.ndim == 2 else wav
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate)
    n = int(round(clip_s * sample_rate))
    x = np.pad(x[:n], (0, max(0, n - len(x)))).astype(np.float64)
    fade = min(n, int(FADE_S * sample_rate))
    x[n - fade:] *= np.linspace(1.0, 0.0, fade)
    rms = float(np.sqrt(np.mean(x**2)))
    if rms > 0:
        x *= 10 ** (loudness_db / 20) / rms
        peak = float(np.max(np.abs(x)))
        if peak > PEAK:
            x *= PEAK / peak
    return x.astype(np.float32)


def render_clip(clip: ClipPlan, out_dir: str | os.PathLike, sample_rate: int,
                audio_format: str = "wav") -> str:
    """Compose, render and write one clip (MIDI beside audio) under ``out_dir``; returns its id."""
    import soundfile as sf

    out = Path(out_dir)
    midi = midi_bytes(clip)
    atomic_write(out / clip.midi_name, midi)
    audio = render_audio(midi, clip.clip_s, sample_rate, clip.loudness_db)
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, subtype=_SUBTYPE[audio_format], format=audio_format.upper())
    atomic_write(out / clip.audio_name(audio_format), buf.getvalue())
    return clip.clip_id
