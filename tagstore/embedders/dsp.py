"""``dsp``: handcrafted spectral, timbral, harmonic and rhythmic statistics; pure numpy, no weights.

Per window (10 s at 22050 Hz, STFT 2048/512 with a Hann window, frames not centred) the embedder
summarises, over frames, with mean and standard deviation:

=================  ====  ===========================================================================
block              dims  what, units
=================  ====  ===========================================================================
logmel             128   64 Slaney mel bands (0-11025 Hz, area-normalised) of |STFT|^2, log10 with a
                         1e-10 floor ("bels"); mean and std
mfcc               60    20 MFCCs (orthonormal DCT-II of the log-mel): mean, std; delta-MFCC std
contrast           14    spectral contrast, log10(peak / valley) of |STFT| in 7 octave sub-bands
                         (<200, 200-400, ..., >=6400 Hz; 2 % quantiles, as librosa); mean, std
chroma             24    12 pitch classes (C=0 .. B=11) of |STFT|^2, 65-4200 Hz, each frame scaled to
                         max 1; mean, std
spectral           12    centroid, bandwidth, 85 % rolloff (kHz), flatness (0-1), zero-crossing rate
                         (crossings per sample), RMS (linear, full scale 1); mean, std
onset              3     onset strength (half-wave rectified log-mel flux, 80 dB range): mean, std,
                         onset rate (peaks per second)
tempo              33    onset autocorrelation on 32 log-spaced BPM bins over 40-240 (sums to 1, or
                         0 without periodicity), then the best BPM / 100
=================  ====  ===========================================================================

The blocks have different scales; standardise them (z-score over a collection) before comparing with
cosine or training a probe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tagstore.embedders.base import Embedder
from tagstore.errors import EmbedderError

# Bump whenever any number below or any computation changes: it invalidates stored embeddings.
_ALGO_VERSION = 1

_SR = 22050
_N_FFT = 2048
_HOP = 512
_N_MELS = 64
_N_MFCC = 20
_CONTRAST_FMIN = 200.0
_CONTRAST_BANDS = 6  # octave bands above fmin; one more band below it
_CONTRAST_QUANTILE = 0.02
_CHROMA_FMIN, _CHROMA_FMAX = 65.0, 4200.0
_ROLLOFF = 0.85
_ONSET_RANGE_BELS = 8.0  # 80 dB below the window's loudest mel cell counts as silence for onsets
_ONSET_PEAK_RADIUS = 3  # frames (~70 ms) a peak must dominate on each side
_BPM_MIN, _BPM_MAX, _BPM_BINS, _BPM_OVERSAMPLE = 40.0, 240.0, 32, 4
_BPM_PRIOR = 120.0
_LOG_FLOOR = 1e-10
_MAX_ABS = 1e4  # input peak accepted (audio is in [-1, 1])


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (as librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular Slaney mel filters, each of unit area in Hz."""
    fmax = sr / 2 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` orthonormal DCT-II: ``y = D @ x``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d


def chroma_filterbank(sr: int, n_fft: int, fmin: float, fmax: float) -> np.ndarray:
    """``(12, n_fft // 2 + 1)``: each bin in [fmin, fmax] Hz split linearly between its two nearest pitch classes."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    inside = (freqs >= fmin) & (freqs <= fmax)
    midi = 69.0 + 12.0 * np.log2(np.maximum(freqs, 1e-10) / 440.0)
    dist = (midi[None, :] - np.arange(12)[:, None]) % 12.0  # semitones above each pitch class
    dist = np.minimum(dist, 12.0 - dist)
    return np.maximum(0.0, 1.0 - dist) * inside[None, :]


def _contrast_bands(sr: int, n_fft: int) -> list[tuple[int, int]]:
    """Bin ranges [lo, hi) of the contrast sub-bands: below fmin, then octaves, the last up to Nyquist."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = [0.0] + [_CONTRAST_FMIN * 2.0**k for k in range(_CONTRAST_BANDS)]
    starts = [int(np.searchsorted(freqs, e)) for e in edges]
    return list(zip(starts, starts[1:] + [freqs.shape[0]]))


class DSPEmbedder(Embedder):
    """Handcrafted features of 10-s windows at 22050 Hz (see the module docstring for the layout)."""

    name = "dsp"
    licence = "MIT (tagstore)"
    sample_rate = _SR
    window_s = 10.0
    hop_s = 5.0
    min_duration_s = 0.5
    batch_size = 16
    # pad_short keeps the default repetition padding: short clips are mostly loops and one-shots, and
    # repeating them keeps the mel/chroma means and the onset rate of the clip itself, whereas zero padding
    # would add silence that drags every mean towards the floor and adds a spurious onset per repeat.

    def __init__(self, **options: Any) -> None:
        if options:
            raise EmbedderError(f"embedder 'dsp' takes no options, got {sorted(options)}; use plain 'dsp'")
        self._window = np.hanning(_N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
        self._freqs_khz = (np.fft.rfftfreq(_N_FFT, 1.0 / _SR) / 1000.0).astype(np.float32)
        f32 = np.float32
        self._mel = np.ascontiguousarray(mel_filterbank(_SR, _N_FFT, _N_MELS).T, dtype=f32)  # (bins, mels)
        self._dct = np.ascontiguousarray(dct_matrix(_N_MFCC, _N_MELS).T, dtype=f32)  # (mels, mfcc)
        chroma = chroma_filterbank(_SR, _N_FFT, _CHROMA_FMIN, _CHROMA_FMAX)
        self._chroma = np.ascontiguousarray(chroma.T, dtype=f32)  # (bins, 12)
        self._bands = _contrast_bands(_SR, _N_FFT)
        self._frame_rate = _SR / _HOP
        n_fine = _BPM_BINS * _BPM_OVERSAMPLE
        self._bpm_grid = _BPM_MIN * (_BPM_MAX / _BPM_MIN) ** ((np.arange(n_fine) + 0.5) / n_fine)
        self._bpm_lags = 60.0 * self._frame_rate / self._bpm_grid  # in onset frames
        # A beat period and its multiples correlate alike; like librosa's tempo estimate, prefer tempi
        # near 120 BPM (log-normal, one octave wide) when picking the single best BPM.
        self._bpm_prior = np.exp(-0.5 * np.log2(self._bpm_grid / _BPM_PRIOR) ** 2)
        layout = [
            ("logmel_mean", _N_MELS), ("logmel_std", _N_MELS),
            ("mfcc_mean", _N_MFCC), ("mfcc_std", _N_MFCC), ("mfcc_delta_std", _N_MFCC),
            ("contrast_mean", len(self._bands)), ("contrast_std", len(self._bands)),
            ("chroma_mean", 12), ("chroma_std", 12),
            ("spectral_mean", 6), ("spectral_std", 6),
            ("onset", 3), ("tempo_hist", _BPM_BINS), ("tempo_bpm", 1),
        ]  # fmt: skip
        self.feature_slices: dict[str, slice] = {}
        """Where each feature block lies in an embedding, e.g. ``feature_slices["chroma_mean"]``."""
        start = 0
        for key, size in layout:
            self.feature_slices[key] = slice(start, start + size)
            start += size
        self.dim = start

    @property
    def version(self) -> str:
        return f"dsp-{_ALGO_VERSION}"

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 220500)`` float32 mono windows in [-1, 1] at 22050 Hz -> ``(n, dim)`` float32, all finite.

        Raises ValueError on another shape, or on NaN or samples beyond +-1e4. Windows are computed one
        at a time (float32 spectra, float64 statistics), so a row does not depend on the rest of the batch.
        """
        windows = self.check_windows(windows)
        # float32 spectra stay finite far beyond this bound; NaN fails the comparison too
        peak = float(np.abs(windows).max()) if windows.size else 0.0
        if not peak <= _MAX_ABS:
            raise ValueError(
                f"dsp: windows must hold audio in [-1, 1], got a peak of {peak} (NaN or far out of range)"
            )
        out = np.empty((windows.shape[0], self.dim), dtype=np.float32)
        for i, window in enumerate(windows):
            out[i] = self._window_features(window)
        return out

    # --- one window ------------------------------------------------------------------------------

    def _window_features(self, x: np.ndarray) -> np.ndarray:
        frames = sliding_window_view(x, _N_FFT)[::_HOP]  # (F, n_fft) view, no copy
        spec = np.fft.rfft(frames * self._window, axis=1)
        power = spec.real**2 + spec.imag**2  # (F, bins) float32
        mag = np.sqrt(power)
        logmel = np.log10(power @ self._mel + _LOG_FLOOR)  # (F, mels)
        mfcc = logmel @ self._dct
        onset = self._onset_envelope(logmel)
        parts = [
            *_mean_std(logmel),
            *_mean_std(mfcc),
            _delta(mfcc).std(axis=0, dtype=np.float64),
            *_mean_std(self._contrast(mag)),
            *_mean_std(self._chromagram(power)),
            *_mean_std(self._spectral(frames, power, mag)),
            self._onset_stats(onset),
            *self._tempo(onset),
        ]
        return np.concatenate(parts)

    def _contrast(self, mag: np.ndarray) -> np.ndarray:
        """``(F, 7)`` log10 ratio of the mean of the top and bottom 2 % magnitudes in each sub-band."""
        out = np.empty((mag.shape[0], len(self._bands)))
        for k, (lo, hi) in enumerate(self._bands):
            n = hi - lo
            q = max(1, int(round(_CONTRAST_QUANTILE * n)))
            part = np.partition(mag[:, lo:hi], (q - 1, n - q), axis=1)
            peak = part[:, n - q :].mean(axis=1)
            valley = part[:, :q].mean(axis=1)
            out[:, k] = np.log10(peak + _LOG_FLOOR) - np.log10(valley + _LOG_FLOOR)
        return out

    def _chromagram(self, power: np.ndarray) -> np.ndarray:
        chroma = power @ self._chroma  # (F, 12)
        return chroma / np.maximum(chroma.max(axis=1, keepdims=True), _LOG_FLOOR)

    def _spectral(self, frames: np.ndarray, power: np.ndarray, mag: np.ndarray) -> np.ndarray:
        """``(F, 6)``: centroid, bandwidth, rolloff (kHz), flatness, zero-crossing rate, RMS."""
        f = self._freqs_khz
        total = mag.sum(axis=1)
        safe = np.maximum(total, _LOG_FLOOR)
        centroid = mag @ f / safe
        spread = mag @ (f * f) / safe - centroid**2
        bandwidth = np.sqrt(np.maximum(spread, 0.0))
        reached = np.cumsum(mag, axis=1) >= (_ROLLOFF * total)[:, None]
        rolloff = f[np.argmax(reached, axis=1)]
        log_power = np.log(np.maximum(power, _LOG_FLOOR))
        flatness = np.exp(log_power.mean(axis=1, dtype=np.float64)) / np.maximum(
            power.mean(axis=1, dtype=np.float64), _LOG_FLOOR
        )
        zcr = np.count_nonzero(np.diff(np.signbit(frames), axis=1), axis=1) / _N_FFT
        rms = np.sqrt(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / _N_FFT)
        return np.stack([centroid, bandwidth, rolloff, np.minimum(flatness, 1.0), zcr, rms], axis=1)

    def _onset_envelope(self, logmel: np.ndarray) -> np.ndarray:
        """``(F - 1,)`` mean over mel bands of the half-wave rectified frame-to-frame log-mel rise (bels)."""
        floored = np.maximum(logmel, logmel.max() - _ONSET_RANGE_BELS)
        return np.maximum(np.diff(floored, axis=0), 0.0).mean(axis=1, dtype=np.float64)

    def _onset_stats(self, onset: np.ndarray) -> np.ndarray:
        """Mean, std and rate (per second) of peaks that dominate +-70 ms and exceed mean + std / 2."""
        mean, std = onset.mean(), onset.std()
        r = _ONSET_PEAK_RADIUS
        neighbourhood = sliding_window_view(np.pad(onset, r, constant_values=-np.inf), 2 * r + 1).max(axis=1)
        peaks = np.count_nonzero((onset >= neighbourhood) & (onset > mean + 0.5 * std))
        return np.array([mean, std, peaks * self._frame_rate / onset.shape[0]])

    def _tempo(self, onset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Autocorrelation strength per BPM bin (sums to 1) and the strongest BPM / 100 (0: no periodicity)."""
        # A 3-tap smoothing lets a beat period that falls between two frames show up at one lag.
        smooth = np.convolve(onset, (0.25, 0.5, 0.25), mode="same")
        centred = smooth - smooth.mean()
        n = 1 << int(np.ceil(np.log2(2 * centred.shape[0])))
        spectrum = np.fft.rfft(centred, n)
        ac = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n)[: centred.shape[0]]
        if ac[0] <= 0:
            return np.zeros(_BPM_BINS), np.zeros(1)
        strength = np.maximum(np.interp(self._bpm_lags, np.arange(ac.shape[0]), ac / ac[0]), 0.0)
        hist = strength.reshape(_BPM_BINS, _BPM_OVERSAMPLE).mean(axis=1)
        total = hist.sum()
        if total <= 0:
            return np.zeros(_BPM_BINS), np.zeros(1)
        best = self._bpm_grid[np.argmax(strength * self._bpm_prior)]
        return hist / total, np.array([best / 100.0])


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0, dtype=np.float64), x.std(axis=0, dtype=np.float64)


def _delta(x: np.ndarray) -> np.ndarray:
    """HTK regression deltas over +-2 frames along axis 0, edges repeated."""
    p = np.pad(x, ((2, 2), (0, 0)), mode="edge")
    return (p[3:-1] - p[1:-3] + 2.0 * (p[4:] - p[:-4])) / 10.0
