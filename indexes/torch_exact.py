"""Exact cosine search with torch: the fallback when FAISS has no GPU build but torch sees CUDA.

``faiss-gpu`` does not install everywhere (its wheels follow particular CUDA and Python versions), while
CUDA torch comes with the models. For a Flat index, exact search is one matrix product and a top-k, which
torch does well on a GPU: :class:`TorchExact` keeps the (unit) vectors on a torch device and answers
:meth:`~TorchExact.search` with the same results and conventions as FAISS Flat
(:meth:`tagstore.indexes.FaissIndex.search`): best first, ``-1`` / ``-inf`` padding, include/exclude
filters applied inside the search so they never truncate the result.

The database is scanned in chunks of rows, so the ``(queries, chunk)`` score block stays within a
memory budget; each chunk's top-k is merged into the running best. Works on any torch device (the tests
run it on CPU tensors against FAISS Flat); torch is imported when one is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["TorchExact", "torch_cuda_available"]

SCORE_BLOCK_BYTES = 256 << 20
"""Budget for one ``(queries, chunk)`` float32 score block (256 MiB)."""


def torch_cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchExact:
    """Unit float32 vectors ``(n, dim)`` under int64 ids, held as a torch tensor on ``device``.

    ``vectors`` must already be L2-normalised (a :class:`~tagstore.indexes.FaissIndex` stores them so);
    queries are normalised here. ``chunk_rows`` fixes the database rows per scan step (default: from
    :data:`SCORE_BLOCK_BYTES` and the number of queries).
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, device: str = "cuda", chunk_rows: int | None = None):
        import torch

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors)
        if vectors.dtype != np.float32 or vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(
                f"vectors must be float32 (n, dim) with one id each, got {vectors.dtype} {vectors.shape} for {len(ids)} ids"
            )
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self._torch = torch
        self.device = torch.device(device)
        self.ids = ids
        self.dim = int(vectors.shape[1])
        self.chunk_rows = chunk_rows
        self._order = np.argsort(ids, kind="stable")  # for mapping filter ids to rows
        host = torch.from_numpy(np.ascontiguousarray(vectors))
        if self.device.type == "cuda":
            host = host.pin_memory()
        self._x = host.to(self.device, non_blocking=True)
        self._ids_t = torch.from_numpy(ids).to(self.device)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"TorchExact(ntotal={self.ntotal}, dim={self.dim}, device={str(self.device)!r})"

    def _rows_of(self, wanted: np.ndarray) -> np.ndarray:
        """Row numbers of the stored ids among ``wanted`` (sorted unique int64); unknown ids are ignored."""
        if not len(self.ids) or not len(wanted):
            return np.zeros(0, dtype=np.int64)
        sorted_ids = self.ids[self._order]
        pos = np.searchsorted(sorted_ids, wanted)
        pos = np.minimum(pos, len(sorted_ids) - 1)
        hit = sorted_ids[pos] == wanted
        return self._order[pos[hit]]

    def _mask(self, include: np.ndarray | None, exclude: np.ndarray | None) -> Any:
        """A bool tensor ``(n,)`` of the rows a search may return, or None for all."""
        if include is None and exclude is None:
            return None
        torch = self._torch
        if include is not None:
            mask = torch.zeros(self.ntotal, dtype=torch.bool)
            mask[torch.from_numpy(self._rows_of(include))] = True
        else:
            mask = torch.ones(self.ntotal, dtype=torch.bool)
        if exclude is not None:
            mask[torch.from_numpy(self._rows_of(exclude))] = False
        return mask.to(self.device)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        include_ids: Iterable[int] | np.ndarray | None = None,
        exclude_ids: Iterable[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most cosine-similar stored vectors for each of ``queries`` (q, dim) float32.

        Returns ``(scores, ids)``, float32 and int64 of shape (q, k), best first, padded with ``-inf``
        and ``-1`` where fewer than ``k`` are allowed. Same contract as FAISS Flat.
        """
        torch = self._torch
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = np.asarray(queries)
        if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be float32 of shape (q, {self.dim}), got {q.dtype} {q.shape}")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        if np.any(~np.isfinite(norms) | (norms == 0)):
            raise ValueError("queries: a row is all zeros or not finite; it has no direction")
        q = np.ascontiguousarray(q / norms, dtype=np.float32)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        labels = np.full((len(q), k), -1, dtype=np.int64)
        include = _sorted_ids(include_ids)
        exclude = _sorted_ids(exclude_ids)
        if len(q) == 0 or self.ntotal == 0:
            return scores, labels
        mask = self._mask(include, exclude)
        allowed = self.ntotal if mask is None else int(mask.sum())
        kk = min(k, allowed)
        if kk == 0:
            return scores, labels
        step = self.chunk_rows or max(1024, SCORE_BLOCK_BYTES // (4 * len(q)))
        with torch.inference_mode():
            qt = torch.from_numpy(q).to(self.device)
            best_s = torch.full((len(q), 0), -float("inf"), device=self.device)
            best_r = torch.zeros((len(q), 0), dtype=torch.int64, device=self.device)
            for start in range(0, self.ntotal, step):
                block = qt @ self._x[start : start + step].T  # (q, c) cosines
                if mask is not None:
                    block.masked_fill_(~mask[start : start + step], -float("inf"))
                top_s, top_r = block.topk(min(kk, block.shape[1]), dim=1)
                cand_s = torch.cat([best_s, top_s], 1)
                cand_r = torch.cat([best_r, top_r + start], 1)
                best_s, pick = cand_s.topk(min(kk, cand_s.shape[1]), dim=1)
                best_r = cand_r.gather(1, pick)
            found_ids = self._ids_t[best_r]
            found_s = best_s.float().cpu().numpy()
            found_ids = found_ids.cpu().numpy()
        valid = np.isfinite(found_s)  # masked rows can fill the top-k only when fewer than kk are allowed
        labels[:, :kk] = np.where(valid, found_ids, -1)
        scores[:, :kk] = np.where(valid, found_s, -np.inf)
        return scores, labels


def _sorted_ids(value: Any) -> np.ndarray | None:
    """A filter argument (array, list, set, any iterable of ints) as sorted unique int64, or None."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray) and isinstance(value, Iterable):
        value = list(value)
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"filter ids must be a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    return np.unique(arr.astype(np.int64))
