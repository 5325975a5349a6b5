"""VGGish (Hershey et al. 2017, Apache-2.0) in PyTorch, with torchvggish's weights and network.

The network is torchvggish's ``VGG`` (harritaylor/torchvggish, a port of TensorFlow's ``vggish_slim``):
six 3x3 convolutions with ReLU in four max-pooled stages (64, 128, 256x2, 512x2 channels) over a
``(96, 64)`` log-mel patch, the feature map flattened in TensorFlow's (time, frequency, channel) order,
and three fully connected layers with ReLU (4096, 4096, 128). The state dict of ``vggish-10086976.pth``
loads into it unchanged (converted to safetensors when installed). It is written out here rather than
imported from the ``torchvggish`` package because that package downloads its weights through torch.hub
when a model is built and imports resampy (numba) on import; ``tests/test_vggish.py`` checks that the
output equals ``torchvggish``'s forward on the same weights.

Input, as ``torchvggish.vggish_input`` computes it (``mel_features``): 16 kHz audio, 25-ms frames
(400 samples) every 10 ms (160), a periodic Hann window, the magnitude of a 512-point FFT, 64 HTK mel
bands from 125 to 7500 Hz, ``log(mel + 0.01)``; 96 frames = 0.96 s make one patch, patches do not
overlap. A window here is the audio of one patch: 400 + 95 x 160 = 15600 samples (0.975 s), every
15360 samples (0.96 s), so a file gives exactly the patches of ``waveform_to_examples``. The log-mel is
computed in float64 as the numpy original does, the network in float32.

Output: the 128-d embedding (after its ReLU) as floats by default. ``pca=true`` applies the AudioSet
postprocessing instead (PCA with whitening, clipping to [-2, 2] and 8-bit quantisation to the values
0..255, as floats), the form of the embeddings released with AudioSet; it needs the ``vggish-pca`` bundle.
The track vector is the mean over patches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import _torch
from tagstore.embedders.base import Embedder

SAMPLE_RATE = 16000
STFT_WINDOW = 400
"""25 ms at 16 kHz."""
STFT_HOP = 160
"""10 ms at 16 kHz."""
N_FFT = 512
"""The next power of two above the frame length, as ``mel_features`` chooses."""
N_MELS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
N_FRAMES = 96
PATCH_SAMPLES = STFT_WINDOW + (N_FRAMES - 1) * STFT_HOP
"""15600 samples (0.975 s): the audio one 96-frame patch is computed from."""
PATCH_HOP = N_FRAMES * STFT_HOP
"""15360 samples (0.96 s): patches follow each other without overlap."""
EMBEDDING_SIZE = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

CONVS = (("features.0", 1, 64), ("features.3", 64, 128), ("features.6", 128, 256), ("features.8", 256, 256),
         ("features.11", 256, 512), ("features.13", 512, 512))
"""torchvggish's ``make_layers``: (state-dict prefix, in, out) of each 3x3 convolution."""
POOL_AFTER = {"features.0", "features.3", "features.8", "features.13"}
FCS = (("embeddings.0", 512 * 4 * 6, 4096), ("embeddings.2", 4096, 4096), ("embeddings.4", 4096, EMBEDDING_SIZE))


def _param_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, cin, cout in CONVS:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (cout, cin, 3, 3), (cout,)
    for prefix, fin, fout in FCS:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (fout, fin), (fout,)
    return shapes


PARAM_SHAPES = _param_shapes()
"""The state dict of torchvggish's ``VGG`` (``vggish-10086976.pth``)."""
PCA_SHAPES = {"pca_eigen_vectors": (EMBEDDING_SIZE, EMBEDDING_SIZE), "pca_means": (EMBEDDING_SIZE, 1)}
"""``vggish_pca_params-970ea276.pth``: AudioSet's PCA matrix (rows are components) and mean."""
WEIGHTS_FILE = "vggish.safetensors"
PCA_FILE = "vggish_pca_params.safetensors"


# --- weights: the published .pth -> safetensors ----------------------------------------------------


def convert_weights(source: Path, out_dir: Path) -> None:
    """Convert torchvggish's ``vggish-10086976.pth`` state dict into ``vggish.safetensors`` in ``out_dir``."""
    _torch.convert_checkpoint(Path(source), Path(out_dir) / WEIGHTS_FILE, PARAM_SHAPES,
                              "torchvggish's VGGish state dict (vggish-10086976.pth)")


def convert_pca(source: Path, out_dir: Path) -> None:
    """Convert ``vggish_pca_params-970ea276.pth`` into ``vggish_pca_params.safetensors`` in ``out_dir``."""
    _torch.convert_checkpoint(Path(source), Path(out_dir) / PCA_FILE, PCA_SHAPES,
                              "VGGish's PCA parameters (vggish_pca_params-970ea276.pth)")


# --- input: log-mel patches ----------------------------------------------------------------------


def mel_matrix() -> np.ndarray:
    """``mel_features.spectrogram_to_mel_matrix`` for VGGish: ``(257, 64)`` float64, HTK mel, 125-7500 Hz."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log(1.0 + f / 700.0)

    bins_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1))
    edges = np.linspace(hz_to_mel(np.float64(MEL_MIN_HZ)), hz_to_mel(np.float64(MEL_MAX_HZ)), N_MELS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0, :] = 0.0  # the DC bin contributes to no band
    return weights


class VGGishEmbedder(Embedder):
    """VGGish embeddings of 0.96-s patches at 16 kHz, torchvggish's network and weights.

    Options (strings from a spec such as ``vggish:pca=true``): ``pca`` (default false: the raw 128-d
    float embedding; true: AudioSet's PCA-whitened, 8-bit-quantised values 0..255); ``device``
    (``auto``, ``cpu`` or ``cuda``); ``threads`` (CPU threads, else ``$TAGSTORE_THREADS``);
    ``batch_size`` (patches per forward pass); ``weights_dir`` (else the per-user cache).

    ``embed``: ``(n, 15600)`` float32 16 kHz windows -> ``(n, 128)`` float32. Track vector: the mean.
    """

    name = "vggish"
    licence = "Apache-2.0"
    sample_rate = SAMPLE_RATE
    dim = EMBEDDING_SIZE
    window_s = PATCH_SAMPLES / SAMPLE_RATE
    hop_s = PATCH_HOP / SAMPLE_RATE
    batch_size = 64
    CUDA_WINDOW_BYTES = 8 << 20
    """Working memory of one window in a CUDA forward pass (an estimate)."""

    def __init__(
        self,
        pca: bool | str = False,
        device: str = "auto",
        threads: int | str | None = None,
        batch_size: int | str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        _torch.check_device(self.name, device)
        self.pca = _torch.parse_bool(self.name, "pca", pca)
        if batch_size not in (None, ""):
            self.batch_size = _torch.parse_positive(self.name, "batch_size", batch_size, int)
        params, self.weights_digest = _torch.load_tensors(self.name, "vggish", WEIGHTS_FILE, weights_dir, PARAM_SHAPES)
        pca_params: dict[str, np.ndarray] = {}
        self.pca_digest = ""
        if self.pca:
            pca_params, self.pca_digest = _torch.load_tensors(self.name, "vggish-pca", PCA_FILE, weights_dir, PCA_SHAPES)
        torch, self.device = _torch.setup_torch(self.name, device, threads)
        self._torch = torch
        self.batch_size = _torch.batch_size_for(torch, self.device, self.CUDA_WINDOW_BYTES, self.batch_size,
                                                given=batch_size not in (None, ""))  # fmt: skip
        self._to_device = _torch.HostToDevice(torch, self.device)
        t = lambda a, dtype=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)  # noqa: E731
        self._params = {k: t(v) for k, v in params.items()}
        if self.pca:
            self._pca = (t(pca_params["pca_eigen_vectors"].T), t(pca_params["pca_means"].reshape(1, -1)))
        self._mel = t(mel_matrix(), torch.float64)
        n = np.arange(STFT_WINDOW)
        self._window = t(0.5 - 0.5 * np.cos(2 * np.pi / STFT_WINDOW * n), torch.float64)  # periodic Hann

    @property
    def version(self) -> str:
        extra = f"+{self.pca_digest[:23]}" if self.pca else ""
        return f"1:{self.weights_digest[:23]}{extra}"

    @property
    def options(self) -> dict[str, Any]:
        return {"pca": self.pca}

    def _logmel(self, windows: Any) -> Any:
        torch = self._torch
        frames = windows.double().unfold(1, STFT_WINDOW, STFT_HOP)  # (n, 96, 400)
        spec = torch.fft.rfft(frames * self._window, n=N_FFT).abs()  # (n, 96, 257)
        return torch.log(spec @ self._mel + LOG_OFFSET).float()  # (n, 96, 64)

    def logmel(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 15600)`` float32 windows -> ``(n, 96, 64)`` float32 log-mel patches (``waveform_to_examples``)."""
        windows = self.check_windows(windows)
        with self._torch.inference_mode():
            return self._logmel(self._to_device(windows)).cpu().numpy()

    def _network(self, patches: Any) -> Any:
        F, p = self._torch.nn.functional, self._params
        x = patches.unsqueeze(1)  # (n, 1, 96, 64)
        for prefix, _, _ in CONVS:
            x = F.relu(F.conv2d(x, p[f"{prefix}.weight"], p[f"{prefix}.bias"], padding=1))
            if prefix in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (n, 6 time, 4 freq, 512): TensorFlow's flattening order
        for prefix, _, _ in FCS:
            x = F.relu(F.linear(x, p[f"{prefix}.weight"], p[f"{prefix}.bias"]))
        return x

    def _postprocess(self, emb: Any) -> Any:
        """AudioSet's PCA, whitening and 8-bit quantisation of ``(n, 128)`` embeddings (values 0..255)."""
        matrix_t, means = self._pca
        clipped = ((emb - means) @ matrix_t).clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return self._torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 15600)`` float32 windows at 16 kHz -> ``(n, 128)`` float32 (raw, or PCA'd with ``pca``)."""
        windows = self.check_windows(windows)
        if windows.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        with torch.inference_mode():
            x = self._network(self._logmel(self._to_device(windows)))
            if self.pca:
                x = self._postprocess(x)
            return x.cpu().numpy().astype(np.float32, copy=False)

