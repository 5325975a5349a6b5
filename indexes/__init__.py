"""Vector-index backends: derived, rebuildable, verified copies of the catalogue's embeddings.

One interface, :class:`FaissIndex` (cosine search over int64 catalogue ids, CPU or CUDA), made by
:func:`create`, :func:`build` (chunked, seeded training) or :func:`load` (mmap, checked against the
catalogue's :class:`IndexFileInfo`), saved atomically by :meth:`FaissIndex.save`. :func:`verify`
checks a file against its record without opening it. ``faiss`` itself is imported on first use, so
importing this package is cheap.
"""

from __future__ import annotations

from .faiss_index import FaissIndex, build, create, load
from .files import IndexFileInfo, IndexFileRecord, file_checksum, verify

__all__ = [
    "FaissIndex",
    "IndexFileInfo",
    "IndexFileRecord",
    "build",
    "create",
    "file_checksum",
    "load",
    "verify",
]
