"""``tagstore serve``: open the store, load it, bind, record the address, answer until stopped.

The socket is bound here (not by uvicorn) so that ``port=0`` picks a free port and the address file
names the port actually bound; the file is written only once the socket listens and the store is
loaded, and removed when the server stops (a killed server leaves it behind: clients see that its
process is gone and ignore it).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tagstore.errors import InputError, StoreBusyError
from tagstore.server import Address, is_loopback, pid_alive, read_address, remove_address, write_address

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "bind", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def running(store: Path) -> Address | None:
    """The server already answering for ``store``, if any (its process alive and its port open)."""
    from tagstore.server.client import port_open

    addr = read_address(store)
    if addr is None or not pid_alive(addr.pid) or addr.pid == os.getpid():
        return None
    return addr if port_open(addr.connect_host, addr.port) else None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one); InputError naming both otherwise."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None
    sock.set_inheritable(False)
    return sock


def serve(store_path: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          runtime: Mapping[str, Any] | None = None, say: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Serve the store at ``store_path`` until interrupted (SIGINT / SIGTERM)."""
    import uvicorn

    from tagstore import api
    from tagstore.server.app import Resident, create_app

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    store = api.open(store_path, runtime=runtime)
    other = running(store.path)
    if other is not None:
        raise StoreBusyError(
            f"a server for the store {store.path} already runs (pid {other.pid} at {other.url}); "
            "use it, or stop it before starting another"
        )
    if not is_loopback(host):
        say(f"warning: serving on {host}: anyone who can reach this address can read and change the store "
            "(no authentication yet); use the default --host 127.0.0.1 to keep it local")  # fmt: skip
    sock = bind(host, port)
    resident = Resident(store)
    try:
        warmed = resident.start()
        app = create_app(store, resident)
        addr = write_address(store.path, host, sock.getsockname()[1])
        if str(warmed.get("embedders", "")).startswith("not loaded"):
            say(f"warning: embedders {warmed['embedders']}")
        say(f"serving {store.path} at {addr.url} (API docs: {addr.url}/docs); loaded in {warmed.get('seconds', 0)} s; "
            "Ctrl-C stops")  # fmt: skip
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        server.run(sockets=[sock])
    finally:
        remove_address(store.path)
        resident.stop()
        sock.close()
