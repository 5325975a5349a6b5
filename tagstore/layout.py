"""The embedder layout of a store: which backends, in which order, with which versions and dims.

A store holds vectors of exactly one layout, recorded at ``init``. A stored vector is the
concatenation of each block's pooled track embedding (raw, float32); the index vector derived
from it normalises each block on its own (see :func:`normalise_blocks`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tagstore.errors import LayoutMismatchError


@dataclass(frozen=True)
class Block:
    """One embedder's slice of the stored vector."""

    name: str
    version: str
    dim: int
    sample_rate: int
    window_s: float
    hop_s: float
    options: dict[str, Any]

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this embedder, e.g. ``musicnn:model=MTT``."""
        return ":".join([self.name, *(f"{k}={v}" for k, v in sorted(self.options.items()))])


@dataclass(frozen=True)
class Layout:
    """Ordered blocks; ``dim`` is the sum of block dims."""

    blocks: tuple[Block, ...]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> Layout:
        return cls(tuple(Block(**{**r, "options": dict(r.get("options") or {})}) for r in records))

    @classmethod
    def from_json(cls, text: str) -> Layout:
        return cls.from_records(json.loads(text))

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "name": b.name,
                "version": b.version,
                "dim": b.dim,
                "sample_rate": b.sample_rate,
                "window_s": b.window_s,
                "hop_s": b.hop_s,
                "options": b.options,
            }
            for b in self.blocks
        ]

    def to_json(self) -> str:
        return json.dumps(self.to_records(), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """Short content digest of the layout, recorded beside every index built from it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return sum(b.dim for b in self.blocks)

    @property
    def spec(self) -> str:
        return ",".join(b.spec for b in self.blocks)

    @property
    def slices(self) -> list[slice]:
        """Column slice of each block in the stored vector."""
        out, start = [], 0
        for b in self.blocks:
            out.append(slice(start, start + b.dim))
            start += b.dim
        return out

    def check_same(self, other: Layout) -> None:
        """Raise LayoutMismatchError unless ``other`` computes exactly the same vectors."""
        if self.to_json() == other.to_json():
            return
        mine = {b.name: b for b in self.blocks}
        for b in other.blocks:
            old = mine.get(b.name)
            if old is None:
                break
            if old.version != b.version or old.dim != b.dim or old.options != b.options:
                raise LayoutMismatchError(
                    f"embedder {b.name!r} is now version {b.version} ({b.dim}-d) but the store was built "
                    f"with {old.version} ({old.dim}-d); run `tagstore rebuild --re-embed` to re-embed the store"
                )
        raise LayoutMismatchError(
            f"embedders {other.spec!r} differ from the store's {self.spec!r}; "
            f"use the store's embedders or run `tagstore rebuild --re-embed --embedders {other.spec}`"
        )


def normalise_blocks(
    vectors: np.ndarray, layout: Layout, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """Derive index vectors from stored ones.

    vectors: ``(n, layout.dim)`` float32 raw track embeddings. Each block is standardised with the
    catalogue statistics ``mean``/``std`` (``(layout.dim,)``, optional), L2-normalised, and weighted by
    ``1/sqrt(n_blocks)`` so that every block counts equally and the result has unit norm.
    Returns ``(n, layout.dim)`` float32; all-zero blocks stay zero.
    """
    x = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if x.shape[1] != layout.dim:
        raise ValueError(f"expected vectors of dim {layout.dim}, got {x.shape}")
    if mean is not None:
        x -= mean
    if std is not None:
        x /= std
    weight = np.float32(1.0 / np.sqrt(len(layout.blocks)))
    for sl in layout.slices:
        block = x[:, sl]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, norms, out=block, where=norms > 0)
        block *= weight
    return x
