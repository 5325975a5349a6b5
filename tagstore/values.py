"""Checks of the numbers a user gives (counts such as ``-k``, ``--top``, ``--limit``), in one place.

A count must be a whole number in ``[minimum, MAX_COUNT]``; anything else is an InputError naming the
option, the value and the range. Callers clamp a valid count to what exists (``-k 1000000`` on 40
tracks returns 40), so a large count never allocates for more than the catalogue holds.
"""

from __future__ import annotations

import numbers

from tagstore.errors import InputError

MAX_COUNT = 1_000_000_000
"""The largest count any option accepts (more than any catalogue holds; below every 64-bit limit)."""


def count(value: object, option: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` as an int in ``[minimum, maximum]``; InputError naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{option} must be a whole number, got {value!r}")
    n = int(value)
    if not minimum <= n <= maximum:
        raise InputError(f"{option} must be between {minimum} and {maximum}, got {n}")
    return n


def optional_count(value: object, option: str, minimum: int = 1) -> int | None:
    """As :func:`count`, with None meaning no limit."""
    return None if value is None else count(value, option, minimum)
