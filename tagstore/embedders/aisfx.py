"""aiSFX (Ma & Lerch, ISMIR 2022; CC BY 4.0) in plain PyTorch, loading the published checkpoint.

The network is ``EmbeddingNet('max', 3, 1, 64)`` of the ``aisfx==0.1.2`` package (the embedding trunk of
its best model, X-Sequential-CE, trained across nine sound-effects libraries): four blocks of two 3x3
convolutions (no bias) each followed by batch norm and ReLU, 64, 128, 256 and 512 channels, 2x2 max
pooling after the first three; then the mean over frequency and the max over time: 512 values.

Its input is the package's Essentia log-mel (``spectrogram_essentia.py``, the ISMIR paper's front end):
audio at 44.1 kHz (``EasyLoader``: downmixed to mono, scaled by ``10 ** ((replayGain + 6) / 20)``, which is 1
at its default replayGain of -6 dB, so the samples are unchanged), ``FrameCutter`` frames of 2048 samples every
1024 with the first frame *centred* on sample 0 (1024 zeros before the track, zeros after it; frames go on
while a frame starts before the end), a symmetric 2048-point Hann window, the magnitude spectrum squared,
Essentia's ``MelBands`` (96 bands, 0-22050 Hz, HTK mel scale, ``warping`` weights normalised to unit sum:
:func:`mel_filterbank`), ``log10(1 + 10^4 x)`` and the package's "original" min-max normalisation: divided
by 9.457798957824707. The layout is Essentia's (frames, mels); the package's librosa front end returns the
transpose, and is not used. Blocks of 100 frames (2.32 s) every 50 (the package's ``emb_hop_size=0.5``,
dropping a last partial block) are embedded one by one.

Mapped onto the host: a window is the audio one block's 100 frames read, 99 * 1024 + 2048 = 103424 samples
(2.345 s) every 51200 (1.161 s), after ``lead_in_samples`` = 1024 zeros (the centred first frame) and with
``lead_out_samples`` = 2047 zeros after the track (a frame that starts before the end reads zeros past it),
so the windows are exactly the package's blocks. A clip shorter than one block is zero-padded, as the
package pads its spectrogram with zero rows (a frame of silence is a row of zeros). The track vector pools
the block embeddings (the package returns them unpooled): the mean, or the mean and the maximum or the
standard deviation (option ``pool``).

The front end is computed in float64 FFTs over float32 frames; Essentia's float32 FFT differs from it by
about 2e-4 on log-mel values of 0..8 (2e-5 relative). torch is imported when an embedder is built. Weights
come from the cache (``tagstore models fetch aisfx``: pip downloads the 23 MB wheel, its SHA-256 is checked
and ``aisfx/models/checkpoint.pth`` inside it is converted to safetensors, :func:`convert_wheel`).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import _torch
from tagstore.embedders.base import POOLS, Embedder, parse_pool, pool_windows
from tagstore.errors import EmbedderError
from tagstore.fileio import atomic_write

SAMPLE_RATE = 44100
N_FFT = 2048
HOP = 1024
N_MELS = 96
BLOCK_FRAMES = 100
"""Frames per block (``inference.EMB_BLOCK_LENGTH``): 100 * 1024 / 44100 = 2.32 s."""
BLOCK_HOP = 50
"""Frames between blocks (``emb_hop_size=0.5`` of the paper)."""
WINDOW_SAMPLES = (BLOCK_FRAMES - 1) * HOP + N_FFT
"""103424 samples = 2.345 s: the audio the 100 frames of a block read."""
HOP_SAMPLES = BLOCK_HOP * HOP
"""51200 samples = 1.161 s."""
SPEC_MAX = 9.457798957824707
"""``preprocessing.spectrogram_normalize(spec_norm='original')``: the maximum over the paper's training data."""
BN_EPS = 1e-5
"""``torch.nn.BatchNorm2d`` default epsilon."""
CHECKPOINT = "aisfx/models/checkpoint.pth"
"""The checkpoint's path inside the wheel: ``torch.save((state_dict, datasets))``."""
WEIGHTS_FILE = "aisfx.safetensors"
CHANNELS = (64, 128, 256, 512)
EMBEDDING_SIZE = CHANNELS[-1]


def _param_shapes() -> dict[str, tuple[int, ...]]:
    """The trunk's tensors under the checkpoint's own names (``embedding_net.conv_blockN.{conv,bn}M.*``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 1
    for b, c in enumerate(CHANNELS, 1):
        for m in (1, 2):
            p = f"embedding_net.conv_block{b}."
            shapes[p + f"conv{m}.weight"] = (c, c_in if m == 1 else c, 3, 3)
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                shapes[p + f"bn{m}.{leaf}"] = (c,)
        c_in = c
    return shapes


PARAM_SHAPES = _param_shapes()


# --- weights: the wheel's checkpoint -> safetensors ---------------------------------------------------


def convert_wheel(wheel: Path, out_dir: Path) -> None:
    """Convert ``aisfx/models/checkpoint.pth`` of an ``aisfx==0.1.2`` wheel into ``aisfx.safetensors``.

    Keeps the embedding trunk (:data:`PARAM_SHAPES`, float32), drops the nine per-library classifier heads
    and the batch counters; unpickles with ``weights_only=True``. Raises EmbedderError for another file.
    """
    try:
        with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(prefix="tagstore-aisfx-") as tmp:
            source = Path(tmp) / "checkpoint.pth"
            atomic_write(source, zf.read(CHECKPOINT))
            _torch.convert_checkpoint(
                source, Path(out_dir) / WEIGHTS_FILE, PARAM_SHAPES, "the aisfx 0.1.2 checkpoint",
                adapt=lambda state: state.get("0", state), metadata={"wheel": "aisfx==0.1.2"},
            )
    except (zipfile.BadZipFile, KeyError) as exc:
        raise EmbedderError(f"{wheel} is not a usable aisfx 0.1.2 wheel ({exc}); run `tagstore models fetch aisfx`") from exc


# --- input: Essentia's log-mel -----------------------------------------------------------------------


def mel_filterbank() -> np.ndarray:
    """Essentia's ``MelBands`` weights as aisfx configures them: ``(96, 1025)`` float32.

    HTK mel scale (``2595 log10(1 + f / 700)``), 98 edges from 0 to 22050 Hz in equal mel steps (accumulated
    in float32, as Essentia does), triangles over the bins from ``ceil(lower / df)`` to ``floor(upper / df)``
    weighted on the mel scale (``weighting="warping"``), each band divided by the sum of its weights.
    """
    f32 = np.float32

    def mel(hz: Any) -> Any:
        return f32(2595.0) * np.log10(f32(1.0) + np.asarray(hz, f32) / f32(700.0))

    lo, hi = mel(0.0), mel(SAMPLE_RATE / 2.0)
    step = (hi - lo) / f32(N_MELS + 1)
    edges, m = np.zeros(N_MELS + 2, f32), lo
    for i in range(N_MELS + 2):
        edges[i] = f32(700.0) * (f32(10.0) ** (m / f32(2595.0)) - f32(1.0))
        m = f32(m + step)
    df = f32((SAMPLE_RATE / 2.0) / (N_FFT // 2))
    weights = np.zeros((N_MELS, N_FFT // 2 + 1), f32)
    for i in range(N_MELS):
        rise, fall = mel(edges[i + 1]) - mel(edges[i]), mel(edges[i + 2]) - mel(edges[i + 1])
        bins = np.arange(int(np.ceil(edges[i] / df)), int(np.floor(edges[i + 2] / df)) + 1)
        freqs = (bins * df).astype(f32)
        up = (mel(freqs) - mel(edges[i])) / rise
        down = (mel(edges[i + 2]) - mel(freqs)) / fall
        weights[i, bins] = np.where(freqs < edges[i + 1], up, down)
        weights[i] /= weights[i].sum(dtype=f32)
    return weights


def frame_count(n_samples: int) -> int:
    """Frames Essentia's ``FrameCutter`` (centred first frame) cuts from ``n_samples`` >= 1 samples."""
    return (n_samples - 1) // HOP + 2


def block_starts(n_frames: int) -> list[int]:
    """First frames of the package's blocks of a spectrogram of ``n_frames`` (``preprocessing.blocking``)."""
    return [i * BLOCK_HOP for i in range(max(1, (n_frames - BLOCK_FRAMES) // BLOCK_HOP + 1))]


# --- the embedder --------------------------------------------------------------------------------


class AisfxEmbedder(Embedder):
    """aiSFX sound-effects embeddings (512-d) from the published checkpoint, in PyTorch.

    Options (strings from a spec such as ``aisfx:pool=mean+max``): ``pool`` over a track's blocks ``mean``
    (default), ``mean+max`` or ``mean+std`` (1024-d: the mean, then the maximum or standard deviation);
    ``hop`` frames between blocks, 1 to 100 (default 50, the paper's; the package's ``emb_hop_size`` times
    100; 100 embeds half as many blocks);
    ``device`` (``auto``, ``cpu`` or ``cuda``); ``threads`` (CPU threads, else ``$TAGSTORE_THREADS``,
    ``$OMP_NUM_THREADS`` or the usable CPUs); ``batch_size`` (blocks per forward pass); ``weights_dir``
    (else the per-user cache). Only ``pool`` and ``hop`` change the output.

    ``embed``: ``(n, 103424)`` float32 windows at 44.1 kHz -> ``(n, 512)`` float32.
    """

    name = "aisfx"
    licence = "CC-BY-4.0"
    sample_rate = SAMPLE_RATE
    dim = EMBEDDING_SIZE
    window_s = WINDOW_SAMPLES / SAMPLE_RATE
    hop_s = HOP_SAMPLES / SAMPLE_RATE
    lead_in_samples = N_FFT // 2
    lead_out_samples = N_FFT - 1
    batch_size = 16

    def __init__(
        self,
        pool: str = "mean",
        hop: int | str = BLOCK_HOP,
        device: str = "auto",
        threads: int | str | None = None,
        batch_size: int | str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        _torch.check_device(self.name, device)
        self.pool_how = parse_pool(self.name, pool)
        self.dim = EMBEDDING_SIZE * POOLS[self.pool_how]
        self.hop_frames = _torch.parse_positive(self.name, "hop", hop, int)
        if self.hop_frames > BLOCK_FRAMES:
            raise EmbedderError(f"aisfx: hop must be 1 to {BLOCK_FRAMES} frames, got {hop!r}")
        self.hop_s = self.hop_frames * HOP / SAMPLE_RATE
        if batch_size not in (None, ""):
            self.batch_size = _torch.parse_positive(self.name, "batch_size", batch_size, int)
        params, self.weights_digest = _torch.load_tensors(self.name, "aisfx", WEIGHTS_FILE, weights_dir, PARAM_SHAPES)
        torch, self.device = _torch.setup_torch(self.name, device, threads)
        self._torch = torch
        t = lambda a, dtype=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)  # noqa: E731
        # Batch norm (inference) folds into the bias-free convolution before it: w * g, b = beta - mean * g.
        self._convs = []
        for b in range(1, len(CHANNELS) + 1):
            for m in (1, 2):
                name, bn = f"embedding_net.conv_block{b}.conv{m}.weight", f"embedding_net.conv_block{b}.bn{m}"
                g = params[bn + ".weight"].astype(np.float64) / np.sqrt(params[bn + ".running_var"].astype(np.float64) + BN_EPS)
                shift = params[bn + ".bias"] - params[bn + ".running_mean"] * g
                self._convs.append((t(params[name] * g[:, None, None, None]), t(shift)))
        self._mel = t(mel_filterbank().T.copy())  # (1025, 96)
        n = np.arange(N_FFT)
        self._window = t(0.5 - 0.5 * np.cos(2 * np.pi * n / (N_FFT - 1)), torch.float64)  # symmetric Hann

    @property
    def version(self) -> str:
        return f"1:{self.weights_digest[:23]}"

    @property
    def options(self) -> dict[str, Any]:
        # Only what differs from the defaults, so the layouts of earlier stores still match.
        return {**({"pool": self.pool_how} if self.pool_how != "mean" else {}),
                **({"hop": self.hop_frames} if self.hop_frames != BLOCK_HOP else {})}

    @property
    def window_dim(self) -> int:
        return EMBEDDING_SIZE

    def pool(self, window_embeddings: np.ndarray) -> np.ndarray:
        """``(m, 512)`` block embeddings -> ``(dim,)`` float32 by the ``pool`` option."""
        return pool_windows(window_embeddings, self.pool_how)

    def pad_short(self, audio: np.ndarray) -> np.ndarray:
        """A clip shorter than one block: its lead-in, the clip, then zeros (the package's zero rows)."""
        if audio.shape[0] == 0:
            raise ValueError("cannot pad an empty clip")
        out = np.zeros(self.window_samples, np.float32)
        clip = audio[: self.window_samples - self.lead_in_samples]
        out[self.lead_in_samples : self.lead_in_samples + clip.shape[0]] = clip
        return out

    def _logmel(self, windows: Any) -> Any:
        torch = self._torch
        frames = windows.unfold(1, N_FFT, HOP)  # (n, 100, 2048): frame i of a block
        mag = torch.fft.rfft(frames.double() * self._window, dim=-1).abs().float()
        return torch.log10(torch.square(mag) @ self._mel * 1e4 + 1.0) / SPEC_MAX  # (n, 100, 96)

    def logmel(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 103424)`` float32 windows -> ``(n, 100, 96)`` float32: the network input (normalised log-mel)."""
        windows = self.check_windows(windows)
        with self._torch.inference_mode():
            return self._logmel(self._torch.from_numpy(_writable(windows)).to(self.device)).cpu().numpy()

    def network(self, blocks: Any) -> Any:
        """``(n, 100, 96)`` float32 tensor of normalised log-mel blocks -> ``(n, 512)`` (``EmbeddingNet``)."""
        F = self._torch.nn.functional
        x = blocks.unsqueeze(1)  # (n, 1, time, mel)
        for i, (w, b) in enumerate(self._convs):
            x = F.relu(F.conv2d(x, w, b, padding=1))
            if i % 2 and i < 6:  # after the second convolution of blocks 1-3
                x = F.max_pool2d(x, 2)
        return x.mean(dim=3).amax(dim=2)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 103424)`` float32 windows at 44.1 kHz -> ``(n, 512)`` float32 embeddings."""
        windows = self.check_windows(windows)
        if windows.shape[0] == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(_writable(windows)).to(self.device)
            return self.network(self._logmel(x)).cpu().numpy().astype(np.float32, copy=False)


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()  # torch.from_numpy warns on read-only memory
