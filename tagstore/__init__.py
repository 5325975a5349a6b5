"""tagstore: tag and search music collections with frozen audio embeddings.

The library is the product; the ``tagstore`` command is a view of it. Public names: :mod:`tagstore.api`
(one function per command), :class:`tagstore.store.Store` (the handle) and :mod:`tagstore.errors` (the one
error hierarchy). They are loaded on first use, and heavy modules (torch, faiss) later still, so
importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Store", "api", "errors"]


def __getattr__(name: str) -> Any:
    if name in ("api", "errors"):
        return importlib.import_module(f"tagstore.{name}")
    if name == "Store":
        return importlib.import_module("tagstore.store").Store
    raise AttributeError(f"module 'tagstore' has no attribute {name!r}")
