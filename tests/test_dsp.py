"""Tests for the dsp embedder: the embedder contract, its layout, and musical sanity checks."""

from __future__ import annotations

import numpy as np
import pytest

from tagstore.embedders import Embedder, create
from tagstore.embedders.dsp import DSPEmbedder, chroma_filterbank, dct_matrix, mel_filterbank
from tagstore.errors import EmbedderError, MissingDependencyError, MissingWeightsError, UnknownEmbedderError

SR = 22050


@pytest.fixture(scope="module")
def dsp() -> DSPEmbedder:
    emb = create("dsp")
    assert isinstance(emb, DSPEmbedder)
    return emb


def tone(freq: float, n: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def noise(seed: int, n: int, amp: float = 0.3) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(n)).clip(-1, 1).astype(np.float32)


def click_track(bpm: float, n: int, offset_s: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.zeros(n + SR, dtype=np.float32)
    burst = 0.5 * rng.standard_normal(200) * np.exp(-np.arange(200) / 40)
    for start in np.arange(offset_s, n / SR, 60.0 / bpm):
        i = int(start * SR)
        out[i : i + 200] += burst
    return out[:n]


# --- the contract, written for any backend that imports -----------------------------------------


def _backend(name: str) -> Embedder:
    try:
        return create(name)
    except (MissingDependencyError, MissingWeightsError, UnknownEmbedderError) as exc:
        pytest.skip(f"embedder {name!r} is not usable here: {exc}")


@pytest.mark.parametrize("name", ["dsp"])
def test_embedder_contract(name: str) -> None:
    emb = _backend(name)
    n = emb.window_samples
    assert n == int(round(emb.window_s * emb.sample_rate)) and emb.hop_samples > 0
    rng = np.random.default_rng(0)
    batch = rng.uniform(-0.5, 0.5, size=(3, n)).astype(np.float32)
    out = emb.embed(batch)
    assert out.shape == (3, emb.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    rows = np.vstack([emb.embed(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(out, rows, rtol=1e-5, atol=1e-5)  # batch == single
    np.testing.assert_array_equal(emb.embed(batch), out)  # repeatable
    np.testing.assert_array_equal(create(name).embed(batch), out)  # a fresh instance agrees
    assert emb.embed(np.zeros((0, n), dtype=np.float32)).shape == (0, emb.dim)
    for bad in (batch[0], batch[:, :-1], batch[None], np.zeros((2, n + 1), np.float32)):
        with pytest.raises(ValueError, match=str(n)):
            emb.embed(bad)
    pooled = emb.pool(out)
    assert pooled.shape == (emb.dim,) and pooled.dtype == np.float32
    record = emb.describe()
    assert record["name"] == name and record["dim"] == emb.dim and record["sample_rate"] == emb.sample_rate


# --- layout and construction --------------------------------------------------------------------


def test_layout_and_identity(dsp: DSPEmbedder) -> None:
    slices = list(dsp.feature_slices.values())
    assert slices[0].start == 0 and slices[-1].stop == dsp.dim
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    assert 250 <= dsp.dim <= 320 and dsp.dim == 274
    assert (dsp.sample_rate, dsp.window_s, dsp.hop_s, dsp.min_duration_s) == (22050, 10.0, 5.0, 0.5)
    assert dsp.version.startswith("dsp-") and dsp.licence == "MIT (tagstore)" and dsp.name == "dsp"
    with pytest.raises(EmbedderError, match="takes no options"):
        create("dsp", {"n_mels": "128"})


def test_filterbanks() -> None:
    mel = mel_filterbank(SR, 2048, 64)
    assert mel.shape == (64, 1025) and (mel.sum(axis=1) > 0).all()  # no empty band
    d = dct_matrix(20, 64)
    np.testing.assert_allclose(d @ d.T, np.eye(20), atol=1e-12)  # orthonormal rows
    chroma = chroma_filterbank(SR, 2048, 65.0, 4200.0)
    inside = (np.fft.rfftfreq(2048, 1 / SR) >= 65) & (np.fft.rfftfreq(2048, 1 / SR) <= 4200)
    np.testing.assert_allclose(chroma.sum(axis=0), inside.astype(float), atol=1e-12)


# --- robustness ---------------------------------------------------------------------------------


def test_finite_for_edge_signals(dsp: DSPEmbedder) -> None:
    n = dsp.window_samples
    impulse = np.zeros(n, np.float32)
    impulse[n // 2] = 1.0
    signals = {
        "silence": np.zeros(n, np.float32),
        "dc": np.ones(n, np.float32),
        "impulse": impulse,
        "tiny noise": noise(1, n, amp=1e-9),
        "square": np.sign(tone(100.0, n)).astype(np.float32),
        "nyquist": np.tile(np.array([1.0, -1.0], np.float32), n // 2 + 1)[:n],
    }
    out = dsp.embed(np.stack(list(signals.values())))
    bad = [name for name, row in zip(signals, out) if not np.isfinite(row).all()]
    assert not bad, f"non-finite features for {bad}"
    with pytest.raises(ValueError, match="NaN"):
        dsp.embed(np.full((1, n), np.nan, np.float32))


def test_short_clip_is_repeated_to_a_window(dsp: DSPEmbedder) -> None:
    clip = click_track(120.0, int(0.5 * SR))
    padded = dsp.pad_short(clip)
    assert padded.shape == (dsp.window_samples,)
    np.testing.assert_array_equal(padded[: clip.shape[0]], clip)
    np.testing.assert_array_equal(padded[clip.shape[0] : 2 * clip.shape[0]], clip)
    assert np.isfinite(dsp.embed(padded[None])).all()


# --- musical sanity -----------------------------------------------------------------------------


def test_a4_sine_features(dsp: DSPEmbedder) -> None:
    row = dsp.embed(tone(440.0, dsp.window_samples)[None])[0]
    fs = dsp.feature_slices
    chroma = row[fs["chroma_mean"]]
    assert int(np.argmax(chroma)) == 9  # C=0 ... A=9
    assert chroma[9] == pytest.approx(1.0, abs=1e-3) and np.delete(chroma, 9).max() < 0.3
    centroid_khz, _, rolloff_khz, flatness, _, rms = row[fs["spectral_mean"]]
    assert centroid_khz == pytest.approx(0.44, abs=0.02) and rolloff_khz == pytest.approx(0.44, abs=0.03)
    assert flatness < 0.01 and rms == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert row[fs["onset"]][0] < 1e-3  # a steady tone has (almost) no onsets


@pytest.mark.parametrize("bpm", [120.0, 90.0])
def test_click_track_tempo(dsp: DSPEmbedder, bpm: float) -> None:
    """The best BPM is the click rate itself (the 120-BPM prior picks it over 60/240), within 4 %."""
    windows = np.stack([click_track(bpm, dsp.window_samples, offset) for offset in (0.0, 0.21)])
    out = dsp.embed(windows)
    fs = dsp.feature_slices
    for row in out:
        assert row[fs["tempo_bpm"]][0] * 100 == pytest.approx(bpm, rel=0.04)
        hist = row[fs["tempo_hist"]]
        assert hist.sum() == pytest.approx(1.0, abs=1e-5)
        edges = 40.0 * 6.0 ** (np.arange(33) / 32)
        beat_bin = int(np.searchsorted(edges, bpm)) - 1
        assert hist[max(0, beat_bin - 1) : beat_bin + 2].sum() > 3 / 32  # well above a flat histogram
        assert row[fs["onset"]][2] == pytest.approx(bpm / 60, rel=0.15)  # onset peaks per second


def test_noise_clips_are_closer_to_each_other_than_to_a_sine(dsp: DSPEmbedder) -> None:
    n = dsp.window_samples
    a, b, s = dsp.embed(np.stack([noise(1, n), noise(2, n, amp=0.2), tone(440.0, n, amp=0.3)]))

    def cosine(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    assert cosine(a, b) > cosine(a, s) and cosine(a, b) > cosine(b, s)
    assert np.linalg.norm(a - b) < 0.5 * min(np.linalg.norm(a - s), np.linalg.norm(b - s))
