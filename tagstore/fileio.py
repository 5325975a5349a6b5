"""Files on disk: the one atomic writer and the one file hash, used by every module that writes or checks a file.

:func:`atomic_write` gives readers the old file or the whole new one, never a part, and survives a crash
once it returns: temp file in the same folder, flush, fsync, rename over the target, fsync the folder.
Temp files a killed writer left behind (``.NAME.PID.HEX.tmp`` whose process is gone) are removed by the
next write of the same file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Written", "atomic_write", "file_hash", "fsync_dir", "remove_stale_temps"]

CHUNK = 1 << 20
"""Bytes read or hashed at a time (1 MiB)."""


@dataclass(frozen=True)
class Written:
    """What :func:`atomic_write` wrote: ``"sha256:<hex>"`` of the bytes, size in bytes, mtime in ns."""

    digest: str
    size: int
    mtime_ns: int


class _HashingWriter:
    """A binary sink that hashes what passes through it on the way to the real file."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


Content = bytes | str | Callable[[_HashingWriter], None]
"""What to write: bytes, text (UTF-8), or a function that writes to the given binary sink."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temp files of ``path`` left by writers that are no longer running; returns what was removed."""
    removed = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        parts = tmp.name[len(path.name) + 2 : -4].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or _pid_alive(int(parts[0])) and int(parts[0]) != os.getpid():
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike[str], content: Content, mode: int | None = None) -> Written:
    """Write ``content`` to ``path`` atomically and durably; returns its digest, size and mtime.

    ``mode``: permission bits for the new file (e.g. the old file's, when rewriting one), else the umask's.

    On any failure the temp file is removed, ``path`` is untouched and the error (OSError for disk
    problems) propagates for the caller to name.
    """
    path = Path(path)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # 0o666 so that the umask decides the permissions, as for any other file the user creates.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            sink = _HashingWriter(fh)
            if isinstance(content, str):
                sink.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                sink.write(content)
            else:
                content(sink)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode & 0o7777)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    st = path.stat()
    return Written("sha256:" + sink.sha.hexdigest(), st.st_size, st.st_mtime_ns)


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256", chunk: int = CHUNK) -> str:
    """``"ALGORITHM:HEX"`` digest of a file's bytes (any hashlib algorithm), read ``chunk`` bytes at a time."""
    digest = hashlib.new(algorithm)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return f"{algorithm}:{digest.hexdigest()}"


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
