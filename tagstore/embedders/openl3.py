"""OpenL3 (Cramer et al. 2019; music content, mel256 input) in PyTorch, with torchopenl3's weights.

Which port, and why: the ``openl3`` package needs TensorFlow and downloads its Keras weights in its own
setup, so it cannot install where that download is impossible. torchopenl3 (Das, Khan & Turian 2021;
Apache-2.0) ports the same Keras models to PyTorch (the kapre 0.1.4 spectrogram layers as fixed DFT and
mel kernels, the convolutions converted with MMdnn) and checked its outputs against openl3; its
``torchopenl3_mel256_music_{512,6144}.pth.tar`` state dicts load here unchanged (converted to safetensors
when installed). The network is written out rather than imported from the ``torchopenl3`` package, which
fetches its weights through torch.hub and imports librosa, nnAudio, julius and resampy on import;
``tests/test_openl3.py`` checks that the output equals ``torchopenl3.get_audio_embedding`` on the same
weights.

The computation (torchopenl3's ``PytorchOpenl3``): a 1-s window at 48 kHz, zero-padded by 982 samples on
each side (Keras 'same' padding as kapre computes it), a 2048-point STFT every 242 samples as a strided
convolution with the file's windowed DFT kernels (199 frames), power, the file's 256-band mel matrix,
magnitude, ``10 log10`` clamped at 1e-10, minus the window's maximum, floored at -80 dB; then batch norm,
seven 3x3 convolutions each followed by batch norm and ReLU (64, 64 | 128, 128 | 256, 256 | 512 channels,
2x2 max pooling between groups) and the 3x3 ``audio_embedding_layer`` (512 channels), max-pooled over the
whole (32, 24) map for the 512-d embedding, or in (8, 8) blocks to (4, 3) x 512 = 6144 values (flattened
in Keras's (frequency, time, channel) order). Batch norm (epsilon 1e-3) is folded into the convolutions.

Windows and hop: 1-s windows (the model's input) every **1 s** by default instead of openl3's 0.1 s. The
0.1-s default serves time-aligned frame embeddings; a track vector is the mean over windows, and with one
window per second every sample is in exactly one window and a 3-minute track still averages 180 windows,
so the mean changes little while the cost (the largest of our models per second of audio) drops tenfold.
``hop`` is an option (``openl3:hop=0.5``) for those who prefer overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import _torch
from tagstore.embedders.base import Embedder
from tagstore.errors import EmbedderError

SAMPLE_RATE = 48000
WINDOW = 48000
"""One second at 48 kHz: the model's input."""
N_DFT = 2048
N_HOP = 242
N_MELS = 256
N_BINS = N_DFT // 2 + 1
PAD = (N_DFT - WINDOW % N_HOP) // 2
"""982: kapre's 'same' padding of a 1-s input, on each side."""
N_FRAMES = (WINDOW + 2 * PAD - N_DFT) // N_HOP + 1
"""199 STFT frames per window."""
BN_EPS = 1e-3
AMIN, DYNAMIC_RANGE = 1e-10, 80.0
DEFAULT_HOP_S = 1.0
SIZES = {512: ("openl3", (32, 24)), 6144: ("openl3-6144", (8, 8))}
"""Embedding size -> (weights bundle, final max-pooling kernel) for the mel256 input."""
CHANNELS = (1, 64, 64, 128, 128, 256, 256, 512, 512)
POOL_AFTER = {2, 4, 6}
"""Max pooling follows convolutions conv2d_2, conv2d_4 and conv2d_6."""


def weights_file(embedding_size: int) -> str:
    return f"openl3_mel256_music_{embedding_size}.safetensors"


def _param_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "speclayer.dft_real_kernels": (N_BINS, 1, N_DFT),
        "speclayer.dft_imag_kernels": (N_BINS, 1, N_DFT),
        "speclayer.mel_basis": (N_MELS, N_BINS),
    }
    for i in range(1, 9):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"batch_normalization_{i}.{leaf}"] = (CHANNELS[i - 1] if i > 1 else 1,)
    for i in range(1, 8):
        shapes[f"conv2d_{i}.weight"] = (CHANNELS[i], CHANNELS[i - 1], 3, 3)
        shapes[f"conv2d_{i}.bias"] = (CHANNELS[i],)
    shapes["audio_embedding_layer.weight"] = (512, 512, 3, 3)
    shapes["audio_embedding_layer.bias"] = (512,)
    return shapes


PARAM_SHAPES = _param_shapes()
"""The state dict of torchopenl3's ``PytorchOpenl3("music", "mel256", size)`` (batch-norm counters dropped)."""


def _convert(source: Path, out_dir: Path, size: int) -> None:
    _torch.convert_checkpoint(Path(source), Path(out_dir) / weights_file(size), PARAM_SHAPES,
                              f"torchopenl3's mel256 music state dict (torchopenl3_mel256_music_{size}.pth.tar)")


def convert_weights(source: Path, out_dir: Path) -> None:
    """Convert ``torchopenl3_mel256_music_512.pth.tar`` into ``openl3_mel256_music_512.safetensors`` in ``out_dir``."""
    _convert(source, out_dir, 512)


def convert_weights_6144(source: Path, out_dir: Path) -> None:
    """Convert ``torchopenl3_mel256_music_6144.pth.tar`` into ``openl3_mel256_music_6144.safetensors``."""
    _convert(source, out_dir, 6144)


class OpenL3Embedder(Embedder):
    """OpenL3 music/mel256 embeddings of 1-s windows at 48 kHz, torchopenl3's network and weights.

    Options (strings from a spec such as ``openl3:embedding_size=6144``): ``embedding_size`` 512 (default)
    or 6144 (each has its weights bundle, ``openl3`` and ``openl3-6144``); ``hop`` seconds between windows
    (default 1.0); ``device`` (``auto``, ``cpu`` or ``cuda``); ``threads``; ``batch_size``;
    ``weights_dir`` (else the per-user cache).

    ``embed``: ``(n, 48000)`` float32 48 kHz windows -> ``(n, embedding_size)`` float32. Track vector: the mean.
    """

    name = "openl3"
    licence = "MIT (OpenL3 weights), Apache-2.0 (torchopenl3 port)"
    sample_rate = SAMPLE_RATE
    window_s = WINDOW / SAMPLE_RATE
    hop_s = DEFAULT_HOP_S
    batch_size = 16
    CUDA_WINDOW_BYTES = 64 << 20
    """Working memory of one window in a CUDA forward pass (an estimate: the 256-band mel convolutions)."""

    def __init__(
        self,
        embedding_size: int | str = 512,
        hop: float | str = DEFAULT_HOP_S,
        device: str = "auto",
        threads: int | str | None = None,
        batch_size: int | str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        _torch.check_device(self.name, device)
        try:
            self.dim = int(embedding_size)
        except (TypeError, ValueError):
            self.dim = -1
        if self.dim not in SIZES:
            raise EmbedderError(f"openl3: embedding_size must be 512 or 6144, got {embedding_size!r}")
        self.hop_s = _torch.parse_positive(self.name, "hop", hop)
        if batch_size not in (None, ""):
            self.batch_size = _torch.parse_positive(self.name, "batch_size", batch_size, int)
        bundle, self._pool = SIZES[self.dim]
        params, self.weights_digest = _torch.load_tensors(
            self.name, bundle, weights_file(self.dim), weights_dir, PARAM_SHAPES)
        torch, self.device = _torch.setup_torch(self.name, device, threads)
        self._torch = torch
        self.batch_size = _torch.batch_size_for(torch, self.device, self.CUDA_WINDOW_BYTES, self.batch_size,
                                                given=batch_size not in (None, ""))  # fmt: skip
        self._to_device = _torch.HostToDevice(torch, self.device)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=self.device)  # noqa: E731
        p = {k: v.astype(np.float64) for k, v in params.items()}

        def bn(i: int) -> tuple[np.ndarray, np.ndarray]:
            q = f"batch_normalization_{i}."
            scale = p[q + "weight"] / np.sqrt(p[q + "running_var"] + BN_EPS)
            return scale, p[q + "bias"] - p[q + "running_mean"] * scale

        self._dft = t(np.concatenate([params["speclayer.dft_real_kernels"], params["speclayer.dft_imag_kernels"]]))
        self._mel = t(params["speclayer.mel_basis"])
        # The first batch norm acts on the spectrogram before the zero padding of conv2d_1, so it stays apart;
        # every other one follows a convolution and folds into it.
        self._bn_in = tuple(float(v[0]) for v in bn(1))
        self._convs = []
        for i in range(1, 8):
            scale, shift = bn(i + 1)
            w = p[f"conv2d_{i}.weight"] * scale[:, None, None, None]
            self._convs.append((t(w), t(p[f"conv2d_{i}.bias"] * scale + shift), i in POOL_AFTER))
        self._convs.append((t(p["audio_embedding_layer.weight"]), t(p["audio_embedding_layer.bias"]), False))

    @property
    def version(self) -> str:
        return f"1:{self.weights_digest[:23]}"

    @property
    def options(self) -> dict[str, Any]:
        return {"embedding_size": self.dim, "content_type": "music", "input_repr": "mel256"}

    def _melspec(self, windows: Any) -> Any:
        """``(n, 48000)`` -> ``(n, 1, 256, 199)`` dB mel spectrogram, each window's maximum at 0 dB."""
        torch, F = self._torch, self._torch.nn.functional
        x = F.pad(windows.unsqueeze(1), (PAD, PAD))
        spec = F.conv1d(x, self._dft, stride=N_HOP)  # (n, 2 x 1025, 199): real and imaginary parts
        power = spec[:, :N_BINS].square() + spec[:, N_BINS:].square()
        mel = torch.sqrt(self._mel @ power)  # magnitude (kapre's power_melgram=1)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN))
        db = db - db.amax(dim=(1, 2), keepdim=True)
        return db.clamp(min=-DYNAMIC_RANGE).unsqueeze(1)

    def _network(self, spec: Any) -> Any:
        F = self._torch.nn.functional
        x = spec * self._bn_in[0] + self._bn_in[1]
        last = len(self._convs) - 1
        for i, (w, b, pool) in enumerate(self._convs):
            x = F.conv2d(x, w, b, padding=1)
            if i < last:
                x = F.relu(x)
            if pool:
                x = F.max_pool2d(x, 2)
        x = F.max_pool2d(x, self._pool)  # (n, 512, 1, 1) or (n, 512, 4, 3)
        return x.permute(0, 2, 3, 1).flatten(1)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 48000)`` float32 windows at 48 kHz -> ``(n, embedding_size)`` float32."""
        windows = self.check_windows(windows)
        if windows.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        with torch.inference_mode():
            x = self._to_device(windows)
            return self._network(self._melspec(x)).cpu().numpy()
