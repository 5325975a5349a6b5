"""The embedder contract (HEAR-like) every backend follows.

A backend declares its sample rate (Hz), window and hop (seconds) and output dimension. The host
(``tagstore.embedders.host``) decodes, downmixes and resamples a file to ``sample_rate``, slices it into
windows of ``window_samples`` every ``hop_samples``, calls :meth:`Embedder.embed` on batches of
windows and :meth:`Embedder.pool` on the window embeddings to get one track vector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from tagstore.errors import EmbedderError

POOLS = {"mean": 1, "mean+max": 2, "mean+std": 2}
"""Poolings of window embeddings into a track vector, with the factor each multiplies a dimension by."""


def parse_pool(name: str, pool: object) -> str:
    """A ``pool`` option (``mean``, ``mean+max`` or ``mean+std``), or EmbedderError naming the choices."""
    text = str(pool).strip().lower().replace(" ", "")
    if text not in POOLS:
        raise EmbedderError(f"{name}: unknown pool {pool!r}; choose {', '.join(POOLS)}")
    return text


def pool_windows(window_embeddings: np.ndarray, pool: str = "mean") -> np.ndarray:
    """Pool ``(m, d)`` window embeddings (m >= 1) into ``(d * POOLS[pool],)`` float32.

    ``mean``; ``mean+max``: the mean, then the maximum over windows; ``mean+std``: the mean, then the
    (population) standard deviation over windows, zero for a single window.
    """
    x = np.asarray(window_embeddings, dtype=np.float32)
    mean = x.mean(axis=0)
    if pool == "mean":
        return mean
    second = x.max(axis=0) if pool == "mean+max" else x.std(axis=0)
    return np.concatenate([mean, second]).astype(np.float32)


class Embedder(ABC):
    """One embedding model. Subclasses set the class attributes and implement :meth:`embed`."""

    name: ClassVar[str]
    """Registry name, e.g. ``"dsp"``."""
    licence: ClassVar[str] = "unknown"
    """Licence of the model and its weights, shown by ``tagstore models list``."""
    sample_rate: int
    """Input rate in Hz; the host resamples to it."""
    dim: int
    """Size of the pooled track embedding, and of one window embedding unless :attr:`window_dim` differs."""
    window_s: float
    """Window length in seconds."""
    hop_s: float
    """Hop between window starts in seconds."""
    min_duration_s: float = 0.5
    """Shorter files are refused with TooShortAudioError."""
    batch_size: int = 16
    """Windows per call to :meth:`embed` chosen by the host."""
    lead_in_samples: int = 0
    """Zeros the host puts before a track, so windows line up with a model's own framing (musicnn: 256)."""
    lead_out_samples: int = 0
    """Zeros the host puts after a track, for models whose last frames read past the end (aisfx: 2047)."""
    tag_names: tuple[str, ...] = ()
    """The model's own output tags (e.g. musicnn's 50), empty for models without a tag head."""

    @property
    def version(self) -> str:
        """Identifies the exact computation: code version and weights digest (e.g. ``"1:sha256:ab12.."``)."""
        return "1"

    @property
    def options(self) -> dict[str, Any]:
        """Options that change the output (layer, variant, ...); recorded in the store layout."""
        return {}

    @property
    def window_dim(self) -> int:
        """Size of one window embedding (:meth:`embed`): ``dim``, or less when :meth:`pool` widens it (mean+std)."""
        return self.dim

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @abstractmethod
    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embed a batch of windows.

        windows: ``(n, window_samples)`` float32 mono audio in [-1, 1] at ``sample_rate``.
        Returns ``(n, window_dim)`` float32. Raises ValueError on other shapes.
        """

    def embed_tags(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embed and tag a batch: ``(n, window_dim)`` float32 and ``(n, len(tag_names))`` probabilities, or None.

        Backends with a tag head override this to share one forward pass.
        """
        return self.embed(windows), None

    def pool(self, window_embeddings: np.ndarray) -> np.ndarray:
        """Pool ``(m, window_dim)`` window embeddings (m >= 1) into one ``(dim,)`` float32 track embedding (mean)."""
        return np.asarray(window_embeddings, dtype=np.float32).mean(axis=0)

    def pad_short(self, audio: np.ndarray) -> np.ndarray:
        """Pad a ``(n,)`` clip shorter than one window to ``window_samples`` (default: repetition)."""
        if audio.shape[0] == 0:
            raise ValueError("cannot pad an empty clip")
        reps = -(-self.window_samples // audio.shape[0])
        return np.tile(audio, reps)[: self.window_samples]

    def check_windows(self, windows: np.ndarray) -> np.ndarray:
        """Validate ``(n, window_samples)`` input; returns it as C-contiguous float32."""
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(
                f"{self.name}: expected windows of shape (n, {self.window_samples}), got {windows.shape}"
            )
        return np.ascontiguousarray(windows, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """The block record kept in the store layout."""
        return {
            "name": self.name,
            "version": self.version,
            "dim": int(self.dim),
            "sample_rate": int(self.sample_rate),
            "window_s": float(self.window_s),
            "hop_s": float(self.hop_s),
            "options": self.options,
        }
