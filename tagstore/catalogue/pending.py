"""Statements on ``pending_work``: post-commit steps recorded with the commit that needs them.

A batch of new tracks records ``rescore`` in its own transaction; switching to re-embedded vectors records
``refit``. :mod:`tagstore.api` completes them (at the end of the command, or at the start of the next
writing command after a kill) and then clears them; both steps are idempotent, so doing one twice is harmless.
"""

from __future__ import annotations

from tagstore.catalogue import Connection

RESCORE = "rescore"
REFIT = "refit"


def add(con: Connection, task: str) -> None:
    """Record ``task`` as pending (in the caller's transaction)."""
    con.execute("INSERT INTO pending_work (task) VALUES (?) ON CONFLICT (task) DO NOTHING", [task])


def tasks(con: Connection) -> list[str]:
    """The pending tasks, oldest first."""
    return [r[0] for r in con.execute("SELECT task FROM pending_work ORDER BY since, task").fetchall()]


def clear(con: Connection, task: str) -> None:
    con.execute("DELETE FROM pending_work WHERE task = ?", [task])
