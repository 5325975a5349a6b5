"""Tests for tagstore.audio: formats, downmix, resampling, streaming, memory, errors, tags, digests."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagstore import audio
from tagstore.errors import EmptyAudioError, NotAudioError, PathNotFoundError


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.argmax(spec) * sr / x.shape[0])


def write_pyav(path: Path, codec: str, x: np.ndarray, sr: int) -> Path:
    """Encode mono float32 ``x`` with PyAV, skipping the test when the codec is missing."""
    av = pytest.importorskip("av")
    if codec not in av.codecs_available:
        pytest.skip(f"FFmpeg in this PyAV build has no {codec} encoder")
    with av.open(str(path), "w") as container:
        st = container.add_stream(codec, rate=sr, layout="mono")
        step = 960 if "opus" in codec else 1024
        for i in range(0, x.shape[0], step):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + step].copy(), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sr, i
            for packet in st.encode(frame):
                container.mux(packet)
        for packet in st.encode(None):
            container.mux(packet)
    return path


def needs_mp3() -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write MP3 (needs >= 1.1)")


# --- extensions and probe -----------------------------------------------------------------------


def test_is_audio_path() -> None:
    assert audio.is_audio_path("a/b/Song.FLAC")
    assert audio.is_audio_path(Path("x.m4a")) and audio.is_audio_path("x.opus") and audio.is_audio_path("x.Mp3")
    assert not audio.is_audio_path("cover.jpg") and not audio.is_audio_path("notes.txt")
    assert not audio.is_audio_path("flac")


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [("a.wav", "WAV", "PCM_16"), ("b.wav", "WAV", "FLOAT"), ("c.flac", "FLAC", "PCM_24"),
     ("d.ogg", "OGG", "VORBIS"), ("e.aiff", "AIFF", "PCM_16"), ("f.mp3", "MP3", "MPEG_LAYER_III")],
)
def test_probe_and_load_soundfile_formats(tmp_path: Path, name: str, fmt: str, subtype: str) -> None:
    if fmt == "MP3":
        needs_mp3()
    sr = 22050
    x = sine(440.0, sr, 1.5)
    path = tmp_path / name
    sf.write(path, np.stack([x, x], axis=1), sr, format=fmt, subtype=subtype)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels, info.backend) == (sr, 2, "soundfile")
    assert info.duration_s == pytest.approx(1.5, abs=0.06) and info.format.startswith(fmt)
    y = audio.load(path)
    assert y.dtype == np.float32 and y.ndim == 1 and abs(y.shape[0] - x.shape[0]) < 0.06 * sr
    assert peak_hz(y, sr) == pytest.approx(440.0, abs=sr / y.shape[0] + 1)


@pytest.mark.parametrize(("codec", "name", "sr"), [("aac", "a.m4a", 44100), ("libopus", "b.opus", 48000)])
def test_pyav_formats(tmp_path: Path, codec: str, name: str, sr: int) -> None:
    x = sine(1000.0, sr, 2.0)
    path = write_pyav(tmp_path / name, codec, x, sr)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels, info.backend, info.frames) == (sr, 1, "pyav", None)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    y = audio.load(path, sample_rate=16000)
    assert y.dtype == np.float32 and abs(y.shape[0] - 32000) < 0.1 * 16000
    assert peak_hz(y, 16000) == pytest.approx(1000.0, abs=2)
    assert np.abs(y).max() <= 1.0


# --- sample values, downmix, resampling ---------------------------------------------------------


def test_int16_scaled_to_unit_range(tmp_path: Path) -> None:
    ints = np.array([[-32768, 32767], [0, 0], [16384, -16384], [32767, 32767]], dtype=np.int16)
    sf.write(tmp_path / "i.wav", ints, 8000, subtype="PCM_16")
    y = audio.load(tmp_path / "i.wav")
    expected = ints.astype(np.float32).mean(axis=1) / 32768.0
    np.testing.assert_allclose(y, expected, atol=1e-7)


def test_stereo_downmix_is_channel_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(4000, 2)).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    np.testing.assert_allclose(audio.load(tmp_path / "s.wav"), stereo.mean(axis=1), atol=1e-7)
    cancel = np.stack([sine(300, 8000, 0.5), -sine(300, 8000, 0.5)], axis=1)
    sf.write(tmp_path / "c.wav", cancel, 8000, subtype="FLOAT")
    assert np.abs(audio.load(tmp_path / "c.wav")).max() < 1e-7


def test_resample_44k_to_16k_keeps_length_and_frequency(tmp_path: Path) -> None:
    x = sine(1000.0, 44100, 3.0)
    sf.write(tmp_path / "s.flac", x, 44100)
    y = audio.load(tmp_path / "s.flac", sample_rate=16000)
    assert abs(y.shape[0] - 48000) <= 1
    assert peak_hz(y, 16000) == pytest.approx(1000.0, abs=16000 / y.shape[0])
    direct = audio.resample(x, 44100, 16000)
    assert direct.dtype == np.float32 and abs(direct.shape[0] - 48000) <= 1
    assert audio.resample(x, 44100, 44100) is x
    assert audio.resample(np.stack([x, x], 1), 44100, 22050).shape[1] == 2
    with pytest.raises(ValueError):
        audio.resample(x, 0, 16000)


# --- streaming ----------------------------------------------------------------------------------


def test_stream_chunks_equal_whole_decode_and_are_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(44100 * 4) + sine(440, 44100, 4)).clip(-1, 1).astype(np.float32)
    sf.write(tmp_path / "n.wav", np.stack([x, x], 1), 44100, subtype="FLOAT")
    native = list(audio.stream(tmp_path / "n.wav", chunk_s=0.5))
    assert all(c.shape[0] <= 22050 for c in native)
    np.testing.assert_array_equal(np.concatenate(native), x)

    chunks = list(audio.stream(tmp_path / "n.wav", sample_rate=16000, chunk_s=0.5))
    assert len(chunks) >= 7 and all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    # each chunk holds at most chunk_s of output, plus the resampler's flushed delay in the last one
    assert all(c.shape[0] <= 8000 * 1.05 for c in chunks[:-1]) and chunks[-1].shape[0] <= 8000 * 1.25
    streamed = np.concatenate(chunks)
    whole = audio.resample(x, 44100, 16000)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_stream_multi_decodes_once_for_every_rate(tmp_path: Path) -> None:
    x = sine(220.0, 44100, 2.0)
    sf.write(tmp_path / "m.flac", x, 44100, subtype="PCM_24")
    parts = list(audio.stream_multi(tmp_path / "m.flac", [16000, 22050, 44100, 16000], chunk_s=0.5))
    assert all(set(p) == {16000, 22050, 44100} for p in parts)
    for rate in (16000, 22050, 44100):
        joined = np.concatenate([p[rate] for p in parts])
        np.testing.assert_allclose(joined, audio.load(tmp_path / "m.flac", sample_rate=rate), atol=1e-6)
        assert abs(joined.shape[0] - 2 * rate) <= 1
    with pytest.raises(ValueError):
        list(audio.stream_multi(tmp_path / "m.flac", []))


def test_load_max_s(tmp_path: Path) -> None:
    sf.write(tmp_path / "l.wav", sine(100, 8000, 5.0), 8000)
    assert audio.load(tmp_path / "l.wav", max_s=1.25).shape == (10000,)
    assert audio.load(tmp_path / "l.wav", sample_rate=16000, max_s=2.0).shape == (32000,)
    assert audio.load(tmp_path / "l.wav", max_s=60).shape == (40000,)


def _peak_stream_bytes(path: Path, rate: int, chunk_s: float) -> tuple[int, int]:
    tracemalloc.start()
    try:
        total = sum(c.shape[0] for c in audio.stream(path, sample_rate=rate, chunk_s=chunk_s))
        return total, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _write_long_wav(path: Path, minutes: int, sr: int = 8000) -> Path:
    block = sine(330.0, sr, 60.0, amp=0.3)
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:  # written a minute at a time
        for _ in range(minutes):
            f.write(np.stack([block, block], 1))
    return path


def test_ten_minute_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    total, peak = _peak_stream_bytes(_write_long_wav(tmp_path / "long.wav", 10), 16000, chunk_s=20.0)
    assert abs(total - 10 * 60 * 16000) <= 1
    whole = 10 * 60 * 16000 * 4  # the file at 16 kHz as float32: 38.4 MB
    # per 20 s chunk (1.28 MB out): the stereo read buffer, two mono blocks (look-ahead), the chunk being
    # made and the one the caller still holds
    chunk_out = 20 * 16000 * 4
    assert peak < 6 * chunk_out < whole / 4, f"streaming peaked at {peak / 1e6:.1f} MB"
    _, peak_short = _peak_stream_bytes(_write_long_wav(tmp_path / "short.wav", 2), 16000, chunk_s=20.0)
    assert peak < 1.1 * peak_short, "peak memory grows with the file length"


def test_pyav_streaming_is_bounded(tmp_path: Path) -> None:
    path = write_pyav(tmp_path / "long.m4a", "aac", sine(440.0, 8000, 60.0, amp=0.3), 8000)
    total, peak = _peak_stream_bytes(path, 16000, chunk_s=2.0)
    assert abs(total - 60 * 16000) < 0.05 * 16000
    assert peak < 60 * 16000 * 4 / 6, f"streaming peaked at {peak / 1e6:.1f} MB"


# --- errors -------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.flac"
    for call in (audio.probe, audio.load, lambda p: list(audio.stream(p)), audio.read_metadata, audio.file_hash):
        with pytest.raises(PathNotFoundError, match="check the path") as info:
            call(missing)
        assert str(missing) in str(info.value)


def test_text_file_and_directory_are_not_audio(tmp_path: Path) -> None:
    fake = tmp_path / "fake.wav"
    fake.write_text("this is not audio\n" * 50)
    for target in (fake, tmp_path):
        for call in (audio.probe, audio.load, lambda p: list(audio.stream_multi(p, [16000]))):
            with pytest.raises(NotAudioError, match="supported formats") as info:
                call(target)
            assert str(target) in str(info.value)
    assert audio.read_metadata(fake) == dict.fromkeys(("title", "artist", "album", "genre"))


def test_truncated_m4a_is_not_audio(tmp_path: Path) -> None:
    path = write_pyav(tmp_path / "t.m4a", "aac", sine(440.0, 8000, 2.0), 8000)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises((NotAudioError, EmptyAudioError)):
        audio.probe(path)


def test_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(EmptyAudioError, match="no audio samples") as info:
        audio.probe(path)
    assert str(path) in str(info.value)
    with pytest.raises(EmptyAudioError):
        list(audio.stream(path))


def test_decode_error_midway_becomes_not_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ok.wav"
    sf.write(path, sine(100, 8000, 1.0), 8000)

    def broken_read(self: sf.SoundFile, *args: object, **kwargs: object) -> np.ndarray:
        raise sf.SoundFileRuntimeError("simulated read failure")

    monkeypatch.setattr(sf.SoundFile, "read", broken_read)
    with pytest.raises(NotAudioError, match="decoding failed") as info:
        list(audio.stream(path))
    assert str(path) in str(info.value)


# --- tags and digests ---------------------------------------------------------------------------


def test_read_metadata_from_flac_vorbis_comments(tmp_path: Path) -> None:
    from mutagen.flac import FLAC

    path = tmp_path / "tagged.flac"
    sf.write(path, sine(440, 8000, 0.5), 8000)
    tags = FLAC(path)
    tags["title"] = "Blue in Green"
    tags["artist"] = ["Miles Davis", "Bill Evans"]
    tags["genre"] = ["  "]
    tags.save()
    meta = audio.read_metadata(path)
    assert meta == {"title": "Blue in Green", "artist": "Miles Davis; Bill Evans", "album": None, "genre": None}
    plain = tmp_path / "plain.wav"
    sf.write(plain, sine(440, 8000, 0.5), 8000)
    assert audio.read_metadata(plain) == dict.fromkeys(("title", "artist", "album", "genre"))


def test_file_hash_is_stable_and_content_based(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, sine(440, 8000, 1.0), 8000)
    b.write_bytes(a.read_bytes())
    expected = "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    assert audio.file_hash(a) == audio.file_hash(b) == audio.file_hash(a, chunk=7) == expected
    b.write_bytes(a.read_bytes()[:-1] + b"\x01")
    assert audio.file_hash(b) != expected
