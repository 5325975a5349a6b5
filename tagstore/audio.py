"""Audio decoding: probe, stream, load and resample files as mono float32, plus tags and file digests.

Two decoders: soundfile (libsndfile: WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ...) and PyAV (FFmpeg: M4A/AAC,
Opus, WMA, ... and a fallback for anything soundfile cannot open). Rate conversion is always soxr's, run as
a stream so chunk boundaries are seamless and memory stays bounded by the chunk size, never the file size.
Samples are float32 in [-1, 1] (integer formats are scaled), downmixed to mono by the mean over channels.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tagstore import fileio
from tagstore.errors import EmptyAudioError, NotAudioError, PathNotFoundError


def _sf() -> Any:
    """soundfile, loaded on first use (libsndfile costs tens of ms: a query by id never decodes audio)."""
    import soundfile

    return soundfile


def _soxr() -> Any:
    """soxr, loaded on first use."""
    import soxr

    return soxr

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "check_file",
    "display_path",
    "file_hash",
    "is_audio_path",
    "load",
    "probe",
    "read_metadata",
    "resample",
    "stream",
    "stream_multi",
    "to_wav",
]

# Extensions soundfile is tried first for; everything else goes to PyAV first.
_SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)
AUDIO_EXTENSIONS: frozenset[str] = _SOUNDFILE_EXTENSIONS | frozenset(
    {".m4a", ".m4b", ".mp4", ".aac", ".alac", ".opus", ".wma", ".webm", ".mka", ".ac3", ".wv"}
)
"""Lower-case file extensions (with the dot) treated as audio when walking folders."""

MIN_SAMPLE_RATE = 1000
"""Below this rate (Hz) a file is not audio (a damaged header, or data with an audio extension)."""
_SUPPORTED = "supported formats: " + ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
_META_KEYS = ("title", "artist", "album", "genre")
# Tag keys for formats whose mutagen "easy" interface has no common names (ASF/WMA).
_RAW_META_KEYS = {
    "title": ("Title",),
    "artist": ("Author", "WM/AlbumArtist"),
    "album": ("WM/AlbumTitle",),
    "genre": ("WM/Genre",),
}


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns about a file without decoding it."""

    path: str
    sample_rate: int
    """Native rate in Hz."""
    channels: int
    frames: int | None
    """Samples per channel, or None where the container does not state it exactly (PyAV)."""
    duration_s: float
    """Duration in seconds (from the header; PyAV's may be an estimate)."""
    format: str
    """Container and codec, e.g. ``"FLAC/PCM_16"`` or ``"mov,mp4,m4a,3gp,3g2,mj2/aac"``."""
    backend: str
    """``"soundfile"`` or ``"pyav"``: the decoder :func:`stream` will use."""


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


# --- probe --------------------------------------------------------------------------------------


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as printable text: bytes of a non-UTF-8 name shown as ``\\xNN`` escapes."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def check_file(path: str | os.PathLike[str]) -> os.stat_result:
    """The stat of a regular, non-empty file with a UTF-8 name, or the AudioError that says what it is instead.

    Broken links, link loops, folders, FIFOs and devices are refused without opening them (a FIFO would block).
    """
    p = os.fspath(path)
    shown = display_path(p)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAudioError(f"{shown} is a symbolic link loop; fix or remove the link") from None
        if os.path.islink(p):
            target = display_path(os.readlink(p))
            raise PathNotFoundError(f"{shown} is a broken symbolic link (to {target}); fix or remove the link") from None
        if exc.errno == errno.ENOENT:
            raise PathNotFoundError(f"no such file: {shown}; check the path") from None
        raise NotAudioError(f"cannot read {shown}: {exc.strerror}; check its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise NotAudioError(f"{shown} is {kind}, not an audio file; give an audio file ({_SUPPORTED})")
    if shown != p:
        raise NotAudioError(f"{shown} has a file name that is not valid UTF-8; rename it (e.g. with convmv)")
    if st.st_size == 0:
        raise EmptyAudioError(f"{shown} is an empty file (0 bytes); remove it or replace it with a complete copy")
    return st


def _check_path(path: str | os.PathLike[str]) -> str:
    check_file(path)
    return os.fspath(path)


def _probe_soundfile(path: str) -> AudioInfo:
    info = _sf().info(path)
    return AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration_s=float(info.frames) / info.samplerate if info.samplerate else 0.0,
        format=f"{info.format}/{info.subtype}",
        backend="soundfile",
    )


def _probe_pyav(path: str) -> AudioInfo:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise NotAudioError(f"{path} has no audio stream; give an audio file ({_SUPPORTED})")
        st = container.streams.audio[0]
        rate, channels = int(st.rate or 0), int(st.channels or 0)
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            duration = math.nan
        fmt = f"{container.format.name}/{st.codec_context.name}"
    if rate <= 0 or channels <= 0:
        raise NotAudioError(f"{path}: audio stream without a sample rate or channels; the file may be damaged")
    if not duration > 0:  # unknown or implausible (raw streams without an index): count the samples, streamed
        duration = sum(b.shape[0] for b in _blocks_pyav(path, rate, rate)) / rate
    return AudioInfo(path, rate, channels, None, duration, fmt, "pyav")


def _decoder_errors() -> tuple[type[BaseException], ...]:
    try:
        import av
    except ModuleNotFoundError:  # without PyAV (a minimal set-up such as benchmarks/gpu_check.sh) soundfile's formats still work
        return (_sf().SoundFileError, EOFError, ModuleNotFoundError)
    return (_sf().SoundFileError, av.error.FFmpegError, EOFError)


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header: rate, channels, length and format, without decoding the samples.

    soundfile is tried first for its formats (WAV, FLAC, OGG, MP3, AIFF, ...), PyAV first for the others and
    as the fallback. Raises PathNotFoundError, NotAudioError (no decoder reads it) or EmptyAudioError (0 samples).
    """
    p = _check_path(path)
    order = (_probe_soundfile, _probe_pyav)
    if os.path.splitext(p)[1].lower() not in _SOUNDFILE_EXTENSIONS:
        order = order[::-1]
    errors = _decoder_errors()
    info: AudioInfo | None = None
    for attempt in order:
        try:
            info = attempt(p)
            break
        except errors:
            continue
    if info is None:
        raise NotAudioError(f"{p} cannot be read as audio; {_SUPPORTED}")
    if info.sample_rate < MIN_SAMPLE_RATE:
        raise NotAudioError(
            f"{p} has a sample rate of {info.sample_rate} Hz; audio needs at least {MIN_SAMPLE_RATE} Hz (damaged header?)"
        )
    if info.frames == 0 or info.duration_s <= 0:
        raise EmptyAudioError(f"{p} contains no audio samples; remove it or replace it with a complete copy")
    return info


# --- decoding -----------------------------------------------------------------------------------


def _blocks_soundfile(path: str, block: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``block`` samples (the last may be shorter) at the native rate."""
    try:
        f = _sf().SoundFile(path)
    except _sf().SoundFileError as exc:
        raise NotAudioError(f"{path} cannot be decoded ({exc}); {_SUPPORTED}") from exc
    with f:
        buffer = np.empty((min(block, max(f.frames, 1)), f.channels), dtype=np.float32)  # reused per block
        while True:
            try:
                data = f.read(out=buffer)
            except _sf().SoundFileError as exc:
                raise NotAudioError(f"{path}: decoding failed ({exc}); the file may be damaged") from exc
            if data.shape[0] == 0:
                return
            yield data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)


def _blocks_pyav(path: str, rate: int, block: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of about ``block`` samples at ``rate`` (the stream's native rate), frame by frame."""
    import av

    pending: list[np.ndarray] = []
    size = 0
    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise NotAudioError(f"{path} cannot be decoded ({exc}); {_SUPPORTED}") from exc
    with container:
        st = container.streams.audio[0]
        # PyAV's resampler only converts sample format (planar float32); soxr does the rate conversion.
        # Naming the rate keeps output consistent should a stream change rate midway.
        resampler = av.AudioResampler(format="fltp", layout=st.layout.name, rate=rate)
        frames = container.decode(st)
        while True:
            try:
                frame = next(frames, None)
                converted = resampler.resample(frame)  # None flushes
            except av.error.FFmpegError as exc:
                raise NotAudioError(f"{path}: decoding failed ({exc}); the file may be damaged") from exc
            for out in converted:
                planes = out.to_ndarray()  # (channels, samples) float32
                pending.append(planes.mean(axis=0, dtype=np.float32))
                size += planes.shape[1]
            if size >= block or (frame is None and size):
                yield np.concatenate(pending)
                pending, size = [], 0
            if frame is None:
                return


def stream_multi(
    path: str | os.PathLike[str], rates: Sequence[int], chunk_s: float = 20.0
) -> Iterator[dict[int, np.ndarray]]:
    """Decode a file once and yield, per chunk of about ``chunk_s`` seconds, ``{rate: mono float32 (n,)}``.

    Each rate (Hz) has its own streaming soxr resampler (quality "HQ"), so concatenating the chunks of one
    rate gives the whole file at that rate without clicks at the boundaries. A chunk holds at most about
    ``chunk_s * rate`` samples (plus the resampler's delay in the last one; an array may be empty when the
    resampler is still filling). Memory is bounded by the chunk size. Raises the errors of :func:`probe`, and
    NotAudioError when decoding fails midway.
    """
    if chunk_s <= 0:
        raise ValueError(f"chunk_s must be positive, got {chunk_s}")
    wanted = list(dict.fromkeys(int(r) for r in rates))
    if not wanted or min(wanted) <= 0:
        raise ValueError(f"rates must be positive sample rates in Hz, got {list(rates)}")
    info = probe(path)
    native = info.sample_rate
    block = max(1, int(round(chunk_s * native)))
    if info.backend == "soundfile":
        blocks = _blocks_soundfile(info.path, block)
    else:
        blocks = _blocks_pyav(info.path, native, block)
    resamplers = {
        r: _soxr().ResampleStream(native, r, 1, dtype="float32", quality="HQ") for r in wanted if r != native
    }

    def convert(x: np.ndarray, last: bool) -> dict[int, np.ndarray]:
        return {r: resamplers[r].resample_chunk(x, last=last) if r in resamplers else x for r in wanted}

    # One block of look-ahead so the resamplers' flush joins the last chunk instead of a tiny extra one.
    previous: np.ndarray | None = None
    for current in blocks:
        if previous is not None:
            yield convert(previous, last=False)
        previous = current
    if previous is None:
        raise EmptyAudioError(f"{info.path} contains no audio samples; remove it or replace it with a complete copy")
    yield convert(previous, last=True)


def stream(
    path: str | os.PathLike[str], sample_rate: int | None = None, chunk_s: float = 20.0
) -> Iterator[np.ndarray]:
    """Yield a file as consecutive mono float32 ``(n,)`` chunks of about ``chunk_s`` seconds at ``sample_rate``.

    ``sample_rate`` in Hz; None keeps the native rate. See :func:`stream_multi` for sizes, memory and errors.
    """
    rate = probe(path).sample_rate if sample_rate is None else int(sample_rate)
    for chunk in stream_multi(path, [rate], chunk_s=chunk_s):
        if chunk[rate].size:
            yield chunk[rate]


def load(path: str | os.PathLike[str], sample_rate: int | None = None, max_s: float | None = None) -> np.ndarray:
    """The whole file (or its first ``max_s`` seconds) as mono float32 ``(n,)`` at ``sample_rate`` Hz (None: native).

    Holds the result in memory: meant for short files and tests; use :func:`stream` for long ones.
    """
    rate = probe(path).sample_rate if sample_rate is None else int(sample_rate)
    limit = None if max_s is None else max(0, int(round(max_s * rate)))
    chunk_s = 20.0 if max_s is None else min(20.0, max(max_s, 0.1))
    parts: list[np.ndarray] = []
    have = 0
    for chunk in stream(path, rate, chunk_s=chunk_s):
        parts.append(chunk)
        have += chunk.shape[0]
        if limit is not None and have >= limit:
            break
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return out if limit is None else out[:limit]


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(n,)`` or ``(n, channels)`` audio from ``sr_in`` to ``sr_out`` Hz with soxr (HQ) as float32.

    Returns ``x`` as float32 (no copy when it already is) when the rates are equal.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    return np.asarray(_soxr().resample(x, sr_in, sr_out, quality="HQ"), dtype=np.float32)


def to_wav(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Decode ``path`` (streamed, any format :func:`probe` reads) into ``dest`` as mono 16-bit PCM WAV at the
    native rate, for players that cannot play the original; returns the number of samples written.

    The samples are spooled to an anonymous temporary file (the header needs their count), then written
    with the header through :func:`tagstore.fileio.atomic_write`, so ``dest`` is whole or absent.
    """
    import struct
    import tempfile

    rate = probe(path).sample_rate
    with tempfile.TemporaryFile() as spool:
        count = 0
        for chunk in stream(path, rate):
            pcm = np.round(np.clip(chunk, -1.0, 1.0) * 32767.0).astype("<i2")
            spool.write(pcm.tobytes())
            count += pcm.shape[0]
        size = 2 * count
        header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack(
            "<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16) + b"data" + struct.pack("<I", size)  # fmt: skip

        def content(sink: Any) -> None:
            sink.write(header)
            spool.seek(0)
            while block := spool.read(fileio.CHUNK):
                sink.write(block)

        fileio.atomic_write(dest, content)
    return count


# --- tags and digests ---------------------------------------------------------------------------


def _tag_text(value: Any) -> str | None:
    items = value if isinstance(value, (list, tuple)) else [value]
    texts = [str(getattr(v, "value", v)).strip() for v in items if v is not None]
    joined = "; ".join(t for t in texts if t)
    return joined or None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """The file's ``title``, ``artist``, ``album`` and ``genre`` tags (multi-valued joined by ``"; "``).

    Missing, unreadable or odd tags give None; only a missing path raises (PathNotFoundError).
    """
    p = _check_path(path)
    result: dict[str, str | None] = dict.fromkeys(_META_KEYS)
    try:
        import mutagen

        f = mutagen.File(p, easy=True)
        tags = getattr(f, "tags", None)
        if tags is None:
            return result
        for key in _META_KEYS:
            for candidate in (key, *_RAW_META_KEYS[key]):
                try:
                    value = tags[candidate] if candidate in tags else None
                except (KeyError, ValueError, TypeError):
                    value = None
                text = _tag_text(value) if value is not None else None
                if text:
                    result[key] = text
                    break
    except Exception:  # noqa: BLE001 - tags are best effort: a bad tag block must not stop an import
        return dict.fromkeys(_META_KEYS)
    return result


def file_hash(path: str | os.PathLike[str], chunk: int = fileio.CHUNK) -> str:
    """``"sha256:<hex>"`` of an audio file's bytes (:func:`tagstore.fileio.file_hash`), after checking the path."""
    return fileio.file_hash(_check_path(path), chunk=chunk)
