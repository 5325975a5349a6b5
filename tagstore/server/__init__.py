"""The resident server and the web page it serves: one process that keeps a store open and answers the
JSON API of :mod:`tagstore.api` (the page, :mod:`tagstore.server.web`, is built on that API).

``tagstore serve`` (:mod:`tagstore.server.run`) holds the catalogue connection, the loaded index and the
store's embedders in memory, and answers HTTP on 127.0.0.1 (:mod:`tagstore.server.app`, FastAPI). It
records where it listens in the store folder (:data:`ADDRESS_FILE`, written atomically), so the CLI finds
it (:mod:`tagstore.server.client`) and falls back to opening the store itself when the server is gone.

This module is the address file only, and imports nothing but the standard library and
:mod:`tagstore.fileio`: the CLI reads it on every command.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tagstore.fileio import atomic_write, pid_alive

__all__ = ["ADDRESS_FILE", "Address", "is_loopback", "pid_alive", "read_address", "remove_address", "write_address"]

ADDRESS_FILE = "server.json"
"""In the store folder: where a running server listens (pid, host, port, started, store)."""


@dataclass(frozen=True)
class Address:
    """A running server: its process id, the host and port it is bound to, when it started (ISO 8601
    UTC) and the store folder it serves (absolute)."""

    pid: int
    host: str
    port: int
    started: str
    store: str

    @property
    def connect_host(self) -> str:
        """The host a local client connects to (a wildcard bind is reached on loopback)."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def url(self) -> str:
        host = f"[{self.connect_host}]" if ":" in self.connect_host else self.connect_host
        return f"http://{host}:{self.port}"


def address_path(store: Path) -> Path:
    """The address file of the store folder ``store``."""
    return Path(store) / ADDRESS_FILE


def write_address(store: Path, host: str, port: int) -> Address:
    """Record this process as the store's server (atomically: a reader sees the old file or the new)."""
    addr = Address(os.getpid(), host, int(port), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   str(Path(store).absolute()))  # fmt: skip
    atomic_write(address_path(store), json.dumps(asdict(addr), indent=2) + "\n")
    return addr


def read_address(store: Path) -> Address | None:
    """The recorded server of ``store``, or None (no file, or one that is not an address)."""
    try:
        data = json.loads(address_path(store).read_text())
        return Address(int(data["pid"]), str(data["host"]), int(data["port"]), str(data["started"]), str(data["store"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_address(store: Path, pid: int | None = None) -> None:
    """Remove the address file if it still names ``pid`` (default: this process)."""
    addr = read_address(store)
    if addr is not None and addr.pid == (os.getpid() if pid is None else pid):
        address_path(store).unlink(missing_ok=True)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
