"""tagstore: tag and search music collections with frozen audio embeddings.

The library is the product; the ``tagstore`` command is a view of it. Heavy modules (torch, faiss)
are imported lazily, so importing this package is cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
