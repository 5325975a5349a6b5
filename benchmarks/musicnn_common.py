"""Shared by the musicnn benchmarks: a throwaway TensorFlow venv with the original package, seeded
music-like clips, and the tagstore port set up the way the host runs it.

The venv (default /tmp/tagstore-musicnn-tf, never inside the repository) gets tensorflow-cpu and tf_keras
(the original is TF1 graph code: ``TF_USE_LEGACY_KERAS=1``), librosa and soundfile, and ``musicnn==0.1.0``
with ``--no-deps`` (its own pins, numpy<1.17, cannot install on Python 3.11).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SR = 16000
VENV = Path(os.environ.get("MUSICNN_TF_VENV", "/tmp/tagstore-musicnn-tf"))
WHEEL = "musicnn-0.1.0-py3-none-any.whl"
TF_PACKAGES = ["tensorflow-cpu==2.21.0", "tf_keras==2.21.0", "librosa==0.11.0", "soundfile"]
TF_ENV = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tf_venv(venv: Path = VENV) -> tuple[Path, Path]:
    """Create (once) the TF venv; returns its python and the musicnn wheel it was installed from."""
    py = venv / "bin" / "python"
    wheel_dir = venv / "wheel"
    if not (venv / ".ready").exists():
        log(f"building {venv} (tensorflow-cpu, tf_keras, librosa, musicnn --no-deps); takes a few minutes once")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + TF_PACKAGES, check=True)
        subprocess.run([str(py), "-m", "pip", "download", "--quiet", "--no-deps", "musicnn==0.1.0", "-d", str(wheel_dir)],
                       check=True)
        subprocess.run(pip + ["--no-deps", str(wheel_dir / WHEEL)], check=True)
        (venv / ".ready").touch()
    return py, wheel_dir / WHEEL


def ensure_weights(wheel: Path) -> None:
    """Install musicnn's weights from ``wheel`` (the one the TF venv used) unless the cache has usable ones."""
    from tagstore.embedders import pretrained, weights

    try:
        weights.weights_file(weights.BUNDLES["musicnn"], "MSD_musicnn.safetensors")
    except Exception:  # noqa: BLE001 - any missing/bad cache: install from the wheel the venv used
        pretrained.import_file("musicnn", wheel, progress=log)


def mel_power_max(x: np.ndarray) -> float:
    """Largest mel power of the original's spectrogram of ``x`` (float64; the float16 path needs < 6.55)."""
    from numpy.lib.stride_tricks import sliding_window_view

    from tagstore.embedders.musicnn import mel_filterbank

    frames = sliding_window_view(np.pad(x.astype(np.float64), 256), 512)[::256]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    power = np.abs(np.fft.rfft(frames * hann, axis=-1)) ** 2
    return float((power @ mel_filterbank().T.astype(np.float64)).max())


def music_clip(seconds: float, seed: int, mel_peak: float | None = None) -> np.ndarray:
    """A seeded music-like 16 kHz mono clip: chords, bass, melody with harmonics, kick/snare/hi-hat.

    With ``mel_peak`` it is scaled so that its largest mel power is that value (keep it under 6.55 for
    the original's float16 path to stay finite).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    bpm = rng.uniform(80, 160)
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    x = np.zeros(n)
    prog = rng.choice([0, 3, 5, 7, 8, 10], size=8)
    for bar in range(int(seconds / (4 * beat)) + 1):  # one chord per bar, notes with decaying harmonics
        s, e = int(bar * 4 * beat * SR), min(n, int((bar + 1) * 4 * beat * SR))
        if s >= n:
            break
        tt = t[s:e] - t[s]
        base = root * 2 ** (prog[bar % 8] / 12)
        env = np.exp(-tt / rng.uniform(0.5, 2.0))
        for ratio in (1.0, 1.26, 1.5, 0.5):
            for h in range(1, 6):
                x[s:e] += 0.3 * env * np.sin(2 * np.pi * base * ratio * h * tt + rng.uniform(0, 6)) / h**1.5
    for k in range(int(seconds / (beat / 2))):  # melody in eighths, drums on the beat grid
        s = int(k * beat / 2 * SR)
        e = min(n, s + int(beat / 2 * SR))
        tt = t[s:e] - t[s]
        f = root * 4 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
        x[s:e] += 0.2 * np.exp(-tt * 6) * (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt))
        hat = min(e, s + 400)
        x[s:hat] += 0.05 * rng.standard_normal(hat - s) * np.exp(-np.arange(hat - s) / 80)
        if k % 2 == 0:
            kick = min(n, s + 3000)
            kt = t[s:kick] - t[s]
            drum = np.sin(2 * np.pi * (50 + 100 * np.exp(-kt * 30)) * kt) * np.exp(-kt * 15)
            if k % 4 == 2:  # snare
                drum = drum * 0.3 + 0.5 * rng.standard_normal(kick - s) * np.exp(-kt * 25)
            x[s:kick] += drum
    x += 0.003 * rng.standard_normal(n)
    if mel_peak is not None:
        x *= np.sqrt(mel_peak / mel_power_max(x))
    else:
        x *= 0.5 / np.abs(x).max()
    return x.astype(np.float32)


def windows(audio: np.ndarray, emb) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The windows the host cuts for ``emb``: lead-in zeros, then ``window_samples`` every ``hop_samples``."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.concatenate([np.zeros(getattr(emb, "lead_in_samples", 0), np.float32), audio])
    if padded.shape[0] < emb.window_samples:
        return emb.pad_short(audio)[None]
    return np.ascontiguousarray(sliding_window_view(padded, emb.window_samples)[:: emb.hop_samples])
