"""The CLI's side of the server: find the store's running server and call its JSON API.

Standard library only (``http.client``): the CLI imports this on every command that can use a server,
and a query through the server must not pay for numpy, DuckDB or FAISS. :func:`connect` returns None,
silently, when there is no usable server: no address file, its process is gone, its port is closed, or
it serves another store (the server checks the ``X-Tagstore-Store`` header and answers 409). Errors the
server reports for the request itself (a bad id, an unknown tag, a busy store) come back as the same
:class:`tagstore.errors.TagstoreError` subclass and message the library would have raised.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tagstore import errors
from tagstore.server import Address, pid_alive, read_address

__all__ = ["Client", "ServerGone", "connect"]

STORE_HEADER = "X-Tagstore-Store"
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3600.0  # a write (add-tag at 1M tracks) may take a while; the server answers when done


class ServerGone(Exception):
    """The server could not be reached, or it serves another store: use the store directly."""


class Client:
    """Requests to one running server for one store folder."""

    def __init__(self, address: Address, store: Path) -> None:
        self.address = address
        self.store = str(Path(store).absolute())

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                body: Any = None) -> Any:  # fmt: skip
        """The decoded JSON answer. Raises ServerGone when the request never reached a server for this
        store, the library's error class for a 4xx answer, and ServerGone for anything else on a read
        (``GET``: the caller falls back to the store; a write is not retried behind the user's back)."""
        query = urllib.parse.urlencode(
            [(k, str(v).lower() if isinstance(v, bool) else v) for k, vs in (params or {}).items()
             for v in (vs if isinstance(vs, (list, tuple)) else [vs]) if v is not None]
        )  # fmt: skip
        url = path + ("?" + query if query else "")
        payload = None if body is None else json.dumps(body).encode()
        headers = {STORE_HEADER: urllib.parse.quote(self.store), "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.address.connect_host, self.address.port, timeout=CONNECT_TIMEOUT_S)
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise ServerGone(f"cannot connect to {self.address.url}: {exc}") from None
            if conn.sock is not None:
                conn.sock.settimeout(READ_TIMEOUT_S)
            try:
                conn.request(method, url, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                if method == "GET":
                    raise ServerGone(f"{self.address.url} stopped answering: {exc}") from None
                raise errors.TagstoreError(
                    f"the server at {self.address.url} stopped while answering {method} {path} ({exc}); "
                    "check `tagstore info` and run the command again"
                ) from None
        finally:
            conn.close()
        return _decode(resp.status, raw, self.address)


def _decode(status: int, raw: bytes, address: Address) -> Any:
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        raise ServerGone(f"{address.url} answered {status} without JSON") from None
    if status < 400:
        return data
    if status == 409 and isinstance(data, dict) and data.get("type") == "StoreMismatch":
        raise ServerGone(data.get("error", "the server serves another store"))
    if isinstance(data, dict) and "error" in data:
        cls = getattr(errors, str(data.get("type")), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.TagstoreError)):
            cls = errors.InputError if status < 500 else errors.TagstoreError
        raise cls(data["error"])
    raise ServerGone(f"{address.url} answered {status}")


def connect(store: Path) -> Client | None:
    """A client for the server recorded in ``store``, or None when none is recorded or its process is gone.

    A port that is closed or a server of another store shows up on the first request as ServerGone.
    """
    address = read_address(Path(store))
    if address is None or not pid_alive(address.pid):
        return None
    return Client(address, store)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
