"""One BLAS thread for a block of numpy work, without re-scanning the loaded libraries each time."""

from __future__ import annotations

import functools
from typing import Any

from threadpoolctl import ThreadpoolController


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # finds the BLAS libraries once (~1 ms a time otherwise)


def one_blas_thread() -> Any:
    """A context manager limiting BLAS to one thread inside it (memory-bound products and small solves:
    more threads only add start-up and contention)."""
    return _controller().limit(limits=1, user_api="blas")
