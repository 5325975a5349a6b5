"""PaSST-S (Koutini et al. 2022, Apache-2.0) in PyTorch: hear21passt's ``passt_s_swa_p16_128_ap476``.

The model is the one ``hear21passt.base.get_basic_model()`` builds: AudioSet-trained PaSST-S (SWA weights,
mAP .476) behind its mel front end, loaded from the checkpoint hear21passt downloads
(``passt-s-f128-p16-s10-ap.476-swa.pt``, converted to safetensors when installed). It is written out here
rather than imported from ``hear21passt`` because that package prints to stdout while building and
running a model, downloads weights through timm when built with its defaults, and pulls in timm and
torchvision; ``tests/test_passt.py`` checks that the output equals hear21passt's scene embeddings
(``get_scene_embeddings``) on the same weights.

Front end (``AugmentMelSTFT`` in eval mode): 32 kHz, pre-emphasis ``x[n+1] - 0.97 x[n]``, a centred
(reflect-padded) 1024-point STFT of 800-sample symmetric-Hann frames every 320 samples, power, Kaldi's
128-band mel filterbank from 0 to 15 kHz, ``(log(mel + 1e-5) + 4.5) / 5``: 1000 frames per 10 s. Network:
16x16 patches with stride 10 (12 x 99 patches of 768 values), separate frequency and time position
embeddings, class and distillation tokens, 12 pre-norm transformer blocks (12 heads, GELU MLP of 3072),
a final layer norm; the features are the mean of the two tokens (768) and the logits (527 AudioSet
classes) a layer norm and a linear layer on them. The number of blocks is read from the weights (12 in
the published checkpoint).

Windows: 10 s (the length PaSST was trained on and hear21passt's ``max_model_window``), every 5 s by
default, so a long track is covered by half-overlapping windows; ``hop`` is an option (hear21passt's
scene embeddings use 2.5 s). A file shorter than 10 s is repeated to 10 s. The window embedding is the
768 features, or with ``logits=true`` the 527 logits followed by the 768 features (hear21passt's
``mode="all"`` order); the track vector is the mean over windows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.embedders import _torch
from tagstore.embedders.base import Embedder
from tagstore.errors import EmbedderError

SAMPLE_RATE = 32000
WINDOW = 10 * SAMPLE_RATE
"""10 s at 32 kHz."""
DEFAULT_HOP_S = 5.0
N_FFT, WIN_LENGTH, HOP = 1024, 800, 320
N_MELS = 128
FMIN, FMAX = 0.0, 15000.0
"""hear21passt: ``fmax = sr // 2 - fmax_aug_range // 2`` with ``fmax_aug_range=2000``."""
PREEMPHASIS = 0.97
EMBED_DIM, N_HEADS, MLP_DIM, N_CLASSES = 768, 12, 3072, 527
PATCH, STRIDE = 16, 10
F_PATCHES, T_PATCHES = 12, 99
"""The patch grid of a 128 x 998-frame input, for which the position embeddings were trained."""
LN_EPS = 1e-6
HEAD_LN_EPS = 1e-5
"""The head's ``nn.LayerNorm`` keeps torch's default epsilon."""
WEIGHTS_FILE = "passt_s_swa_p16_128_ap476.safetensors"

_TOP_SHAPES: dict[str, tuple[int, ...]] = {
    "patch_embed.proj.weight": (EMBED_DIM, 1, PATCH, PATCH),
    "patch_embed.proj.bias": (EMBED_DIM,),
    "cls_token": (1, 1, EMBED_DIM),
    "dist_token": (1, 1, EMBED_DIM),
    "new_pos_embed": (1, 2, EMBED_DIM),
    "freq_new_pos_embed": (1, EMBED_DIM, F_PATCHES, 1),
    "time_new_pos_embed": (1, EMBED_DIM, 1, T_PATCHES),
    "norm.weight": (EMBED_DIM,),
    "norm.bias": (EMBED_DIM,),
    "head.0.weight": (EMBED_DIM,),
    "head.0.bias": (EMBED_DIM,),
    "head.1.weight": (N_CLASSES, EMBED_DIM),
    "head.1.bias": (N_CLASSES,),
}
_BLOCK_SHAPES: dict[str, tuple[int, ...]] = {
    "norm1.weight": (EMBED_DIM,), "norm1.bias": (EMBED_DIM,),
    "attn.qkv.weight": (3 * EMBED_DIM, EMBED_DIM), "attn.qkv.bias": (3 * EMBED_DIM,),
    "attn.proj.weight": (EMBED_DIM, EMBED_DIM), "attn.proj.bias": (EMBED_DIM,),
    "norm2.weight": (EMBED_DIM,), "norm2.bias": (EMBED_DIM,),
    "mlp.fc1.weight": (MLP_DIM, EMBED_DIM), "mlp.fc1.bias": (MLP_DIM,),
    "mlp.fc2.weight": (EMBED_DIM, MLP_DIM), "mlp.fc2.bias": (EMBED_DIM,),
}


def param_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """The inference tensors of a PaSST-S state dict with ``depth`` blocks (hear21passt's names)."""
    shapes = dict(_TOP_SHAPES)
    for i in range(depth):
        shapes.update({f"blocks.{i}.{k}": v for k, v in _BLOCK_SHAPES.items()})
    return shapes


def depth_of(keys: Any) -> int:
    """Number of transformer blocks named in a state dict's ``keys``."""
    found = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _unwrap(state: dict[str, Any]) -> dict[str, Any]:
    if "model" in state and isinstance(state["model"], dict):  # checkpoints saved as {"model": state_dict}
        state = state["model"]
    w = state.get("patch_embed.proj.weight")
    if w is not None and len(w.shape) < 4 and int(np.prod(w.shape)) == EMBED_DIM * PATCH * PATCH:
        state = {**state, "patch_embed.proj.weight": w.reshape(EMBED_DIM, 1, PATCH, PATCH)}  # pre-conv layout
    return state


def convert_weights(source: Path, out_dir: Path) -> None:
    """Convert hear21passt's ``passt-s-f128-p16-s10-ap.476-swa.pt`` into ``WEIGHTS_FILE`` in ``out_dir``."""
    _torch.convert_checkpoint(
        Path(source), Path(out_dir) / WEIGHTS_FILE, lambda state: param_shapes(max(depth_of(state), 1)),
        "a PaSST-S state dict (passt-s-f128-p16-s10-ap.476-swa.pt)", adapt=_unwrap)


def mel_banks() -> np.ndarray:
    """``torchaudio.compliance.kaldi.get_mel_banks(128, 1024, 32000, 0, 15000, ...)`` padded to ``(128, 513)``."""

    def mel(f: np.ndarray) -> np.ndarray:
        return 1127.0 * np.log(1.0 + f / 700.0)

    lo, hi = mel(np.float64(FMIN)), mel(np.float64(FMAX))
    delta = (hi - lo) / (N_MELS + 1)
    left = lo + np.arange(N_MELS)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    bins = mel(SAMPLE_RATE / N_FFT * np.arange(N_FFT // 2))[None, :]
    banks = np.maximum(0.0, np.minimum((bins - left) / (center - left), (right - bins) / (right - center)))
    return np.pad(banks, ((0, 0), (0, 1)))  # the Nyquist bin gets no weight


class PaSSTEmbedder(Embedder):
    """PaSST-S AudioSet embeddings of 10-s windows at 32 kHz, hear21passt's model and weights.

    Options (strings from a spec such as ``passt:logits=true:hop=2.5``): ``logits`` (default false: the
    768 features; true: 527 logits + 768 features = 1295); ``hop`` seconds between windows (default 5);
    ``device`` (``auto``, ``cpu`` or ``cuda``); ``threads``; ``batch_size``; ``weights_dir`` (else the cache).

    ``embed``: ``(n, 320000)`` float32 32 kHz windows -> ``(n, dim)`` float32. Track vector: the mean.
    """

    name = "passt"
    licence = "Apache-2.0"
    sample_rate = SAMPLE_RATE
    window_s = WINDOW / SAMPLE_RATE
    hop_s = DEFAULT_HOP_S
    batch_size = 4
    CUDA_WINDOW_BYTES = 256 << 20
    """Working memory of one 10-s window in a CUDA forward pass (an estimate: attention over ~1,200 patches)."""

    def __init__(
        self,
        logits: bool | str = False,
        hop: float | str = DEFAULT_HOP_S,
        device: str = "auto",
        threads: int | str | None = None,
        batch_size: int | str | None = None,
        weights_dir: str | Path | None = None,
    ) -> None:
        _torch.check_device(self.name, device)
        self.logits = _torch.parse_bool(self.name, "logits", logits)
        self.dim = N_CLASSES + EMBED_DIM if self.logits else EMBED_DIM
        self.hop_s = _torch.parse_positive(self.name, "hop", hop)
        if self.hop_s > self.window_s:
            raise EmbedderError(f"passt: hop {self.hop_s} s is longer than the 10-s window; choose at most 10")
        if batch_size not in (None, ""):
            self.batch_size = _torch.parse_positive(self.name, "batch_size", batch_size, int)
        params, self.weights_digest = _torch.load_tensors(
            self.name, "passt", WEIGHTS_FILE, weights_dir, lambda tensors: param_shapes(max(depth_of(tensors), 1)))
        self.depth = depth_of(params)
        torch, self.device = _torch.setup_torch(self.name, device, threads)
        self._torch = torch
        self.batch_size = _torch.batch_size_for(torch, self.device, self.CUDA_WINDOW_BYTES, self.batch_size,
                                                given=batch_size not in (None, ""))  # fmt: skip
        self._to_device = _torch.HostToDevice(torch, self.device)
        self._p = {k: torch.as_tensor(v, device=self.device) for k, v in params.items()}
        self._mel = torch.as_tensor(mel_banks().astype(np.float32), device=self.device)
        self._window = torch.hann_window(WIN_LENGTH, periodic=False, device=self.device)

    @property
    def version(self) -> str:
        return f"1:{self.weights_digest[:23]}"

    @property
    def options(self) -> dict[str, Any]:
        return {"logits": self.logits}

    def _melspec(self, windows: Any) -> Any:
        """``(n, 320000)`` -> ``(n, 128, 1000)`` normalised log-mel."""
        torch = self._torch
        x = windows[:, 1:] - PREEMPHASIS * windows[:, :-1]
        spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WIN_LENGTH, window=self._window, center=True,
                          pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (n, 513, frames)
        return ((self._mel @ power + 0.00001).log() + 4.5) / 5.0

    def _block(self, x: Any, i: int) -> Any:
        F, p, q = self._torch.nn.functional, self._p, f"blocks.{i}."
        n, t, c = x.shape
        h = F.layer_norm(x, (c,), p[q + "norm1.weight"], p[q + "norm1.bias"], LN_EPS)
        qkv = F.linear(h, p[q + "attn.qkv.weight"], p[q + "attn.qkv.bias"])
        qkv = qkv.view(n, t, 3, N_HEADS, c // N_HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(n, t, c)
        x = x + F.linear(a, p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
        h = F.layer_norm(x, (c,), p[q + "norm2.weight"], p[q + "norm2.bias"], LN_EPS)
        h = F.gelu(F.linear(h, p[q + "mlp.fc1.weight"], p[q + "mlp.fc1.bias"]))
        return x + F.linear(h, p[q + "mlp.fc2.weight"], p[q + "mlp.fc2.bias"])

    def _network(self, mel: Any) -> tuple[Any, Any]:
        """``(n, 128, frames)`` -> ``(n, 527)`` logits and ``(n, 768)`` features."""
        torch, F, p = self._torch, self._torch.nn.functional, self._p
        x = F.conv2d(mel.unsqueeze(1), p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=STRIDE)
        x = x + p["time_new_pos_embed"][..., : x.shape[-1]] + p["freq_new_pos_embed"]  # (n, 768, 12, 99)
        x = x.flatten(2).transpose(1, 2)
        n = x.shape[0]
        tokens = torch.cat([p["cls_token"], p["dist_token"]], 1) + p["new_pos_embed"]  # (1, 2, 768)
        x = torch.cat([tokens.expand(n, -1, -1), x], 1)
        for i in range(self.depth):
            x = self._block(x, i)
        x = F.layer_norm(x, (EMBED_DIM,), p["norm.weight"], p["norm.bias"], LN_EPS)
        features = (x[:, 0] + x[:, 1]) / 2
        h = F.layer_norm(features, (EMBED_DIM,), p["head.0.weight"], p["head.0.bias"], HEAD_LN_EPS)
        return F.linear(h, p["head.1.weight"], p["head.1.bias"]), features

    def outputs(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """``(n, 320000)`` windows -> float32 ``{"features": (n, 768), "logits": (n, 527)}`` from one pass."""
        windows = self.check_windows(windows)
        if windows.shape[0] == 0:
            return {"features": np.zeros((0, EMBED_DIM), np.float32), "logits": np.zeros((0, N_CLASSES), np.float32)}
        torch = self._torch
        with torch.inference_mode():
            logits, features = self._network(self._melspec(self._to_device(windows)))
            return {"features": features.cpu().numpy(), "logits": logits.cpu().numpy()}

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 320000)`` float32 windows at 32 kHz -> ``(n, 768)``, or ``(n, 1295)`` with ``logits``."""
        out = self.outputs(windows)
        if not self.logits:
            return out["features"]
        return np.concatenate([out["logits"], out["features"]], axis=1)
