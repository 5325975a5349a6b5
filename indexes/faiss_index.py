"""The FAISS backend: cosine search over catalogue ids, built in chunks, saved atomically, verified on load.

Conventions, decided once for every caller:

* **Cosine = inner product on unit vectors.** :meth:`FaissIndex.add`, :meth:`~FaissIndex.train` and
  :meth:`~FaissIndex.search` L2-normalise a copy of their float32 input (so the caller may pass raw
  embeddings); an all-zero or non-finite row is a ``ValueError``. Scores are cosines in [-1, 1].
* **Ids are catalogue ids** (int64, >= 0, unique): the FAISS index is always ``IDMap2,<factory>``, so ids
  round-trip through files, :meth:`~FaissIndex.remove` works and :meth:`~FaissIndex.reconstruct` is a
  lookup. ``-1`` (with score ``-inf``) pads results when fewer than ``k`` exist.
* **Filters run inside FAISS** (``SearchParameters(sel=IDSelectorBatch / IDSelectorNot)``), so a filter
  never truncates results. For Flat they are exact. For IVF a query that finds fewer than ``k`` is
  searched again visiting 4x the lists, up to all of them, so it returns ``k`` whenever ``k`` vectors pass
  the filter. HNSW stays as approximate as the graph and may return fewer when the allowed set is tiny.
* **Training** (IVF and other factories FAISS reports as untrained): :func:`build` takes a seeded
  uniform sample of ``train_size`` vectors over a first pass (random keys, keep the smallest), then
  adds everything in a second pass; so ``chunks`` must be re-iterable. Too few vectors for the factory
  (fewer than ``nlist`` for IVF) raises :class:`VectorIndexError`; there is no silent fallback to Flat,
  because an index is identified by the factory that built it (pick ``"Flat"`` for small collections).
* **mmap**: :func:`load` maps the vector data of Flat (and HNSW) indexes with ``IO_FLAG_MMAP_IFC``
  instead of reading it (100k x 512-d: ~7 ms instead of ~180 ms). A mapped index is read-only; the
  first ``add``/``remove``/``train`` re-reads it into memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tagstore.errors import IndexCorruptError, VectorIndexError
from tagstore.fileio import atomic_write

from . import devices
from .devices import faiss_module, first_line
from . import files
from .files import REBUILD_HINT, IndexFileInfo, IndexFileRecord, check_file, corrupt, missing

__all__ = ["FaissIndex", "create", "build", "load"]

Chunk = tuple[np.ndarray, np.ndarray]

DEFAULT_EF_SEARCH = 64  # HNSW candidate list at search time (FAISS's own default, 16, loses recall at 512-d)
DEFAULT_NPROBE = 16  # IVF lists visited per query


class FaissIndex:
    """A FAISS index of L2-normalised float32 vectors keyed by int64 catalogue ids.

    Make one with :func:`create`, :func:`build` or :func:`load`. Not thread-safe for writes; concurrent
    ``search`` calls on a CPU index are fine (FAISS searches are const).
    """

    metric = "ip"

    def __init__(self, index: Any, factory: str, device: str, *, source: tuple[Path, int, int] | None = None):
        self._index = index  # the primary: a CPU IndexIDMap2, or one whose inner index is on the GPU
        self._cpu_copy: Any = None  # host copy of a GPU primary, dropped on every change
        self._gpu_resources: Any = None
        self._factory = factory
        self._device = device
        self._source = source  # (path, size, mtime_ns) while the vector data is mmapped from a file
        self._torch: Any = None  # a TorchExact copy that serves searches (see use_torch), dropped on writes

    # --- facts ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    @property
    def ntotal(self) -> int:
        """Number of vectors stored."""
        return int(self._index.ntotal)

    @property
    def factory(self) -> str:
        """FAISS factory string without the ``IDMap2,`` prefix, e.g. ``"Flat"``, ``"HNSW32"``."""
        return self._factory

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"`` (where searches and adds run)."""
        return self._device

    @property
    def compute(self) -> str:
        """Where searches run: ``"faiss-cpu"``, ``"faiss-cuda"`` or ``"torch-<device>"`` (:meth:`use_torch`)."""
        return f"torch-{self._torch.device.type}" if self._torch is not None else f"faiss-{self._device}"

    @property
    def is_trained(self) -> bool:
        """False for an IVF-type index that still needs :meth:`train`."""
        return bool(self._index.is_trained)

    @property
    def nlist(self) -> int:
        """Inverted lists of an IVF index; 0 for other indexes."""
        return _nlist(self._cpu())

    @property
    def nprobe(self) -> int:
        """Lists an IVF index visits per query (0 for other indexes); saved with the file."""
        ivf = _ivf(self._cpu())
        return int(ivf.nprobe) if ivf is not None else 0

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = _ivf(self._cpu())
        if ivf is None:
            raise VectorIndexError(f"factory {self._factory!r} is not an IVF index; it has no nprobe")
        if not isinstance(value, (int, np.integer)) or not 1 <= value <= ivf.nlist:
            raise ValueError(f"nprobe must be a whole number from 1 to {ivf.nlist}, got {value!r}")
        ivf.nprobe = int(value)
        if self._device != "cpu":  # GPU primary: upload the changed host copy again
            host = self._cpu()
            self._index, self._gpu_resources = devices.to_gpu(host)
            self._cpu_copy = host

    @property
    def mmapped(self) -> bool:
        """True while the vector data is mapped read-only from the loaded file."""
        return self._source is not None

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"FaissIndex(factory={self._factory!r}, dim={self.dim}, ntotal={self.ntotal}, device={self._device!r})"

    def ids(self) -> np.ndarray:
        """All stored ids, int64 of shape (ntotal,), in insertion order."""
        return faiss_module().vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def vectors(self) -> np.ndarray:
        """All stored (unit) vectors, float32 ``(ntotal, dim)`` in the order of :meth:`ids` (Flat only)."""
        faiss = faiss_module()
        inner = faiss.downcast_index(self._cpu().index)
        if not isinstance(inner, faiss.IndexFlat):
            raise VectorIndexError(f"factory {self._factory!r} does not keep its vectors; only 'Flat' does")
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(inner.get_xb(), self.ntotal * self.dim).reshape(self.ntotal, self.dim).copy()

    def use_torch(self, device: str = "cuda", chunk_rows: int | None = None) -> None:
        """Serve searches from a torch copy of the vectors on ``device`` (exact, same results as Flat).

        The fallback for a CUDA machine without a GPU build of FAISS; see :mod:`tagstore.indexes.torch_exact`.
        A write (add, remove) drops the copy and searches return to FAISS.
        """
        from .torch_exact import TorchExact

        self._torch = TorchExact(self.ids(), self.vectors(), device=device, chunk_rows=chunk_rows)

    # --- writing ----------------------------------------------------------------------------

    def train(self, vectors: np.ndarray) -> None:
        """Train an IVF-type index on ``vectors`` (n, dim) float32 (normalised here); no-op if trained."""
        if self.is_trained:
            return
        sample = _unit_rows(vectors, self.dim, "training vectors")
        nlist = _nlist(self._index)
        if nlist and len(sample) < nlist:
            raise VectorIndexError(
                f"factory {self._factory!r} needs at least {nlist} vectors to train its {nlist} lists, got "
                f"{len(sample)}; use 'Flat' for a collection this small or fewer lists "
                f"(e.g. 'IVF{max(1, len(sample) // 39)},Flat')"
            )
        self._writable()
        try:
            self._index.train(sample)
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot train factory {self._factory!r}: {first_line(exc)}") from exc
        self._cpu_copy = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` (n, dim) float32 under ``ids`` (n,) int64; ids must be new and unique.

        The vectors are L2-normalised (a copy); a zero or non-finite row raises ``ValueError``.
        """
        keys = _id_array(ids, "ids")
        rows = _unit_rows(vectors, self.dim, "vectors")
        if len(keys) != len(rows):
            raise ValueError(f"got {len(keys)} ids for {len(rows)} vectors")
        if len(np.unique(keys)) != len(keys):
            raise ValueError("ids contain duplicates; each catalogue id may be added once")
        present = keys[np.isin(keys, self.ids())]
        if len(present):
            raise ValueError(f"ids already in the index (remove them first): {present[:5].tolist()}")
        if not self.is_trained:
            raise VectorIndexError(f"factory {self._factory!r} must be trained before adding; use build()")
        self._writable()
        self._index.add_with_ids(rows, keys)
        self._cpu_copy = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (n,) int64 (absent ones are ignored); returns how many were removed."""
        keys = _id_array(ids, "ids")
        if len(keys) == 0 or self.ntotal == 0:
            return 0
        self._writable()
        host = self._cpu()
        try:
            removed = int(host.remove_ids(keys))
        except RuntimeError as exc:
            raise VectorIndexError(
                f"factory {self._factory!r} cannot remove vectors ({first_line(exc)}); {REBUILD_HINT} instead"
            ) from exc
        if host is not self._index:  # GPU primary: upload the changed host copy again
            self._index, self._gpu_resources = devices.to_gpu(host)
            self._cpu_copy = host
        return removed

    # --- reading ----------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        include_ids: Iterable[int] | np.ndarray | None = None,
        exclude_ids: Iterable[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most cosine-similar stored vectors for each of ``queries`` (q, dim) float32.

        ``include_ids`` restricts the candidates to those ids, ``exclude_ids`` removes ids (e.g. the
        query track itself); both filter inside the FAISS search. Returns ``(scores, ids)``: float32 and
        int64 arrays of shape (q, k), best first, padded with ``-inf`` and ``-1`` where fewer exist.
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        rows = _unit_rows(queries, self.dim, "queries")
        if self._torch is not None:
            return self._torch.search(rows, k, include_ids, exclude_ids)
        scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
        labels = np.full((len(rows), k), -1, dtype=np.int64)
        selector, limit = _selector(include_ids, exclude_ids)
        if len(rows) == 0 or self.ntotal == 0 or limit == 0:
            return scores, labels
        kk = min(k, self.ntotal, limit if limit is not None else k)
        try:
            with _one_thread_if(len(rows) == 1):
                if selector is None:
                    found_scores, found_ids = self._index.search(rows, kk)
                else:  # GPU indexes do not take ID selectors: filtered searches run on the host copy
                    host = self._cpu()
                    found_scores, found_ids = host.search(rows, kk, params=_search_params(host, selector, kk))
                self._widen_ivf(rows, kk, selector, found_scores, found_ids)
        except RuntimeError as exc:
            raise VectorIndexError(f"search failed on factory {self._factory!r}: {first_line(exc)}") from exc
        labels[:, :kk] = found_ids
        scores[:, :kk] = np.where(found_ids >= 0, found_scores, -np.inf)
        return scores, labels

    def _widen_ivf(self, rows: np.ndarray, kk: int, selector: Any, scores: np.ndarray, ids: np.ndarray) -> None:
        """IVF: search again, visiting 4x the lists each time up to all of them, the queries that found
        fewer than ``kk`` results (a filter leaving few allowed vectors in the visited lists, or lists
        holding fewer than k). With every list visited all allowed vectors are candidates, so a query
        ends with ``kk`` results whenever that many pass the filter. Updates ``scores``/``ids`` in place."""
        host = self._cpu()
        ivf = _ivf(host)
        if ivf is None:
            return
        nprobe = int(ivf.nprobe)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < kk)
        faiss = faiss_module()
        while len(short) and nprobe < ivf.nlist:
            nprobe = min(int(ivf.nlist), nprobe * 4)
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe) if selector is not None \
                else faiss.SearchParametersIVF(nprobe=nprobe)  # fmt: skip
            s, i = host.search(np.ascontiguousarray(rows[short]), kk, params=params)
            scores[short], ids[short] = s, i
            short = short[(i >= 0).sum(axis=1) < kk]

    def reconstruct(self, id: int) -> np.ndarray:
        """The stored (normalised) vector of ``id``, float32 (dim,); ``KeyError`` if absent."""
        try:
            return np.asarray(self._cpu().reconstruct(int(id)), dtype=np.float32)
        except RuntimeError as exc:
            if "not found" in str(exc):
                raise KeyError(int(id)) from None
            raise VectorIndexError(f"factory {self._factory!r} cannot reconstruct vectors: {first_line(exc)}") from exc

    # --- files ------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> IndexFileInfo:
        """Write the index to ``path`` atomically (temp file, fsync, rename, fsync dir); see
        :func:`tagstore.fileio.atomic_write`. Returns the record to keep in the catalogue."""
        faiss = faiss_module()
        path = Path(path)
        host = self._cpu()
        try:
            done = atomic_write(path, lambda sink: faiss.write_index(host, faiss.PyCallbackIOWriter(sink.write)))
        except OSError as exc:
            raise VectorIndexError(f"cannot write index file {path}: {exc}; check the folder and free space") from exc
        return IndexFileInfo(
            path=path,
            checksum=done.digest,
            size=done.size,
            mtime_ns=done.mtime_ns,
            count=int(host.ntotal),
            dim=int(host.d),
            factory=self._factory,
        )

    # --- internals --------------------------------------------------------------------------

    def _cpu(self) -> Any:
        """The index on the host: the primary itself, or a cached copy of a GPU primary."""
        if self._device == "cpu":
            return self._index
        if self._cpu_copy is None:
            self._cpu_copy = devices.to_cpu(self._index)
        return self._cpu_copy

    def _writable(self) -> None:
        """Replace mmapped (read-only) vector data by an in-memory copy read from the same file."""
        self._torch = None  # the torch copy would go stale
        if self._source is None:
            return
        path, size, mtime_ns = self._source
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise missing(path) from None
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
            raise VectorIndexError(f"index file {path} changed since it was opened; open it again before writing")
        self._index = faiss_module().read_index(str(path))
        self._source = None


def create(
    factory: str,
    dim: int,
    device: str = "auto",
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
) -> FaissIndex:
    """An empty index for ``factory`` (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``, ...) of ``dim``.

    ``device`` is ``"auto"`` (GPU when FAISS sees one and the factory runs there), ``"cpu"`` or
    ``"cuda"`` (raises :class:`VectorIndexError` without a GPU or for a CPU-only factory such as HNSW).
    ``ef_search`` (HNSW) and ``nprobe`` (IVF) are search-time settings; FAISS saves them in the file.
    """
    faiss = faiss_module()
    name = _canonical_factory(factory)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    resolved = devices.resolve_device(device)
    try:
        index = faiss.index_factory(int(dim), "IDMap2," + name, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise VectorIndexError(
            f"FAISS cannot build factory {name!r}: {first_line(exc)}; use e.g. 'Flat', 'HNSW32' or 'IVF1024,Flat'"
        ) from exc
    # index_factory and read_index return owning proxies of the concrete class; downcast_index would
    # return a non-owning one, so only the (outer-owned) inner index is downcast.
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(ef_search)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.nprobe = int(min(nprobe, ivf.nlist))
    result = FaissIndex(index, name, "cpu")
    if resolved == "cuda":
        if not devices.gpu_supported(index):
            if device == "cuda":
                raise VectorIndexError(
                    f"factory {name!r} has no GPU implementation in FAISS; use device 'cpu' or 'auto'"
                )
        else:
            result._index, result._gpu_resources = devices.to_gpu(index)
            result._device = "cuda"
    return result


def build(
    chunks: Iterable[Chunk],
    factory: str,
    dim: int,
    device: str = "auto",
    *,
    train_size: int | None = None,
    seed: int = 0,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
) -> FaissIndex:
    """An index of every ``(ids (n,) int64, vectors (n, dim) float32)`` chunk, added chunk by chunk.

    Memory beyond the index is one chunk, plus, for factories that need training, a sample of
    ``train_size`` vectors (default: ``min(256 * nlist, max(100_000, 39 * nlist))`` for IVF, 100_000
    otherwise) drawn uniformly with ``seed`` over a first pass of ``chunks``; those factories therefore
    need ``chunks`` to be re-iterable (a list, or an object whose ``__iter__`` re-runs the query).
    """
    index = create(factory, dim, device, ef_search=ef_search, nprobe=nprobe)
    if not index.is_trained:
        if iter(chunks) is chunks:
            raise VectorIndexError(
                f"factory {index.factory!r} needs training, which takes two passes over the vectors; "
                "pass a re-iterable (a list, or an object whose __iter__ starts over), not an iterator"
            )
        nlist = _nlist(index._index)
        size = train_size or (min(256 * nlist, max(100_000, 39 * nlist)) if nlist else 100_000)
        index.train(_sample(chunks, dim, size, seed))
    for ids, vectors in chunks:
        index.add(ids, vectors)
    return index


def load(
    path: str | os.PathLike[str],
    expected: IndexFileRecord | None = None,
    *,
    mmap: bool = True,
    prefetch: bool = True,
    device: str = "cpu",
) -> FaissIndex:
    """Open a saved index, checked against the catalogue's record ``expected`` when given.

    Raises :class:`IndexCorruptError` (one line: path, what differed, ``run `tagstore rebuild```) when
    the file is missing, has another size, has another checksum (computed only when size or mtime_ns
    differ from the record: see :mod:`tagstore.indexes.files`), cannot be parsed, is not an
    inner-product ``IDMap2`` index, or holds another count or dim than recorded.

    ``mmap`` maps the vector data instead of reading it (CPU only); ``prefetch`` then first reads the
    file sequentially into the page cache, unless the checksum just did (see
    :func:`tagstore.indexes.files.prefetch`: FAISS maps with ``MADV_RANDOM``, so a cold mapped file
    would be read page by page). ``device`` defaults to ``"cpu"``: for a few queries, copying the
    index to a GPU costs more than searching it on the CPU. ``"auto"``/``"cuda"`` without a GPU build of
    FAISS search a Flat index on CUDA through torch when torch sees a GPU (:meth:`FaissIndex.use_torch`).
    """
    faiss = faiss_module()
    path = Path(path)
    # Without a FAISS GPU, "auto"/"cuda" may still search a Flat index on CUDA through torch (below).
    torch_fallback = device != "cpu" and devices.num_gpus() == 0
    resolved = "cpu" if torch_fallback else devices.resolve_device(device)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise missing(path) from None
    was_read = check_file(path, expected, stat, full=False) if expected is not None else False
    mapped = mmap and resolved == "cpu"
    lists = mapped and files.holds_inverted_lists(path)
    if mapped and prefetch and not was_read and not lists:
        files.prefetch(path)
    try:
        if lists:  # IVF: the inverted lists mapped in place (a query touches nprobe of them), not read whole;
            # FAISS maps them only through a FileIOReader (a path goes through a buffered reader it cannot map)
            index = faiss.read_index(faiss.FileIOReader(str(path)), faiss.IO_FLAG_MMAP)
        else:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
    except (RuntimeError, MemoryError) as exc:
        raise IndexCorruptError(
            f"index file {path} cannot be read by FAISS ({first_line(exc)}); {REBUILD_HINT}"
        ) from exc
    if not isinstance(index, faiss.IndexIDMap2) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise corrupt(path, "index type", "an inner-product IDMap2 index", type(index).__name__)
    if expected is not None:
        if index.ntotal != expected.count:
            raise corrupt(path, "count", expected.count, index.ntotal)
        if index.d != expected.dim:
            raise corrupt(path, "dim", expected.dim, index.d)
    factory = getattr(expected, "factory", None) or _describe(faiss.downcast_index(index.index))
    source = (path, stat.st_size, stat.st_mtime_ns) if mapped else None
    result = FaissIndex(index, factory, "cpu", source=source)
    if resolved == "cuda" and devices.gpu_supported(index):
        result._index, result._gpu_resources = devices.to_gpu(index)
        result._cpu_copy, result._device = index, "cuda"
    elif torch_fallback and devices.search_compute(device, factory) == "torch-cuda":
        result.use_torch("cuda")
    elif device == "cuda":
        raise VectorIndexError(f"factory {factory!r} has no GPU implementation in FAISS; use device 'cpu'")
    return result


# --- helpers ----------------------------------------------------------------------------------


def _canonical_factory(factory: str) -> str:
    """The factory string without spaces and without an ``IDMap``/``IDMap2`` prefix (always added)."""
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory must be a FAISS factory string such as 'Flat', got {factory!r}")
    name = factory.replace(" ", "")
    for prefix in ("IDMap2,", "IDMap,"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _describe(inner: Any) -> str:
    """A factory string for a loaded index when the catalogue's record is not at hand."""
    faiss = faiss_module()
    if isinstance(inner, faiss.IndexHNSWFlat):
        return f"HNSW{inner.hnsw.nb_neighbors(1)}"
    if isinstance(inner, faiss.IndexIVFFlat):
        return f"IVF{inner.nlist},Flat"
    if isinstance(inner, faiss.IndexFlat):
        return "Flat"
    return type(inner).__name__


def _ivf(index: Any) -> Any:
    """The IVF part of an ``IDMap2`` index, or None if it is not IVF."""
    faiss = faiss_module()
    return faiss.try_extract_index_ivf(faiss.downcast_index(index.index))


def _nlist(index: Any) -> int:
    """Number of IVF lists of an ``IDMap2`` index, 0 if it is not IVF."""
    ivf = _ivf(index)
    return int(ivf.nlist) if ivf is not None else 0


def _unit_rows(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    """``x`` (n, dim) float32, checked and L2-normalised into a new C-contiguous array."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"{what} must be float32, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} is all zeros or not finite; it has no direction")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _id_array(ids: Any, what: str) -> np.ndarray:
    """``ids`` as a 1-D int64 array of catalogue ids (>= 0)."""
    keys = np.asarray(ids)
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-D integer array, got {keys.dtype} of shape {keys.shape}")
    if keys.min() < 0:
        raise ValueError(f"{what} must be >= 0 (-1 marks 'no result'), got {int(keys.min())}")
    return np.ascontiguousarray(keys, dtype=np.int64)


def _selector(include: Any, exclude: Any) -> tuple[Any, int | None]:
    """A FAISS ID selector for the filters, and the most results it can allow (None: unbounded)."""
    if include is None and exclude is None:
        return None, None
    faiss = faiss_module()
    excluded = _filter_ids(exclude, "exclude_ids")
    if include is not None:
        allowed = _filter_ids(include, "include_ids")
        if excluded is not None:
            allowed = np.setdiff1d(allowed, excluded, assume_unique=True)
        return (faiss.IDSelectorBatch(allowed) if len(allowed) else None), len(allowed)
    if excluded is None or len(excluded) == 0:
        return None, None
    batch = faiss.IDSelectorBatch(excluded)
    selector = faiss.IDSelectorNot(batch)
    selector.referenced_objects = [batch]  # IDSelectorNot does not own its argument: keep it alive
    return selector, None


def _filter_ids(value: Any, what: str) -> np.ndarray | None:
    """A filter argument (array, list, set, any iterable of ints) as sorted unique int64, or None."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray) and isinstance(value, Iterable):
        value = list(value)  # np.asarray(set) would make a 0-d object array
    return np.unique(_id_array(value, what))


@contextmanager
def _one_thread_if(condition: bool) -> Iterator[None]:
    """Run FAISS on one OpenMP thread (for this OS thread only: the setting is per thread).

    A single-query Flat search splits the database scan over OpenMP threads; measured at 100k x 512-d
    on 2 shared cores, that is 13-34 ms on one thread but 18-140 ms on two, the fork/join waiting on
    busy cores. Batches keep all threads (they split over queries, or use BLAS).
    """
    if not condition:
        yield
        return
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _search_params(index: Any, selector: Any, k: int) -> Any:
    """Search parameters of the class the inner index reads, carrying the selector and, explicitly,
    the index's own efSearch (at least ``k``) / nprobe."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(int(inner.hnsw.efSearch), k))
    if isinstance(inner, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(inner.nprobe))
    return faiss.SearchParameters(sel=selector)


def _sample(chunks: Iterable[Chunk], dim: int, size: int, seed: int) -> np.ndarray:
    """A uniform random sample of ``size`` vectors (all if fewer) over one pass of ``chunks``.

    Each vector gets a key from ``default_rng(seed)``; the ``size`` smallest keys win. Deterministic
    for the same chunks in the same order.
    """
    rng = np.random.default_rng(seed)
    keys = np.zeros(0, dtype=np.float64)
    sample = np.zeros((0, dim), dtype=np.float32)
    for _, vectors in chunks:
        rows = np.asarray(vectors)
        if rows.ndim != 2 or rows.shape[1] != dim or rows.dtype != np.float32:
            raise ValueError(f"vectors must be float32 of shape (n, {dim}), got {rows.dtype} {rows.shape}")
        keys = np.concatenate([keys, rng.random(len(rows))])
        sample = np.concatenate([sample, rows])
        if len(keys) > size:
            keep = np.argpartition(keys, size)[:size]
            keys, sample = keys[keep], sample[keep]
    return sample
