"""Files on disk: the one atomic writer and the one file hash, used by every module that writes or checks a file.

:func:`atomic_write` gives readers the old file or the whole new one, never a part, and survives a crash
once it returns: temp file in the same folder, flush, fsync, rename over the target, fsync the folder.
Temp files a killed writer left behind (``.NAME.PID.HEX.tmp`` whose process is gone) are removed by the
next write of the same file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tagstore.errors import StorageError

__all__ = [
    "Written", "atomic_write", "ensure_dir", "file_hash", "fsync_dir", "remove_files", "remove_stale_temps", "remove_stale_temps_in",
    "stale_temps_in", "storage_errors", "write_problem",
]  # fmt: skip

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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temp files of ``path`` left by writers that are no longer running; returns what was removed."""
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return []
    stale = []
    for tmp in candidates:
        parts = tmp.name[len(path.name) + 2 : -4].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or pid_alive(int(parts[0])) and int(parts[0]) != os.getpid():
            continue
        stale.append(tmp)
    return remove_files(stale)


def stale_temps_in(folder: str | os.PathLike[str]) -> list[Path]:
    """Temp files (``.NAME.PID.HEX.tmp``) in ``folder`` whose writer is gone (killed mid-write)."""
    found = []
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return found
    for tmp in candidates:
        parts = tmp.name.rsplit(".", 3)
        if len(parts) == 4 and parts[1].isdigit() and int(parts[1]) != os.getpid() and not pid_alive(int(parts[1])):
            found.append(tmp)
    return found


def remove_stale_temps_in(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove :func:`stale_temps_in` ``folder`` (derived files get new names, so per-file cleaning misses them)."""
    return remove_files(stale_temps_in(folder))


def remove_files(paths: Iterable[Path]) -> list[Path]:
    """Unlink each of ``paths``, passing over those that cannot be removed; returns those removed."""
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
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


WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EFBIG: "the file size limit was reached (ulimit -f); raise the limit",
    errno.EDQUOT: "the disk quota is exhausted; free some space",
    errno.EROFS: "the file system is read-only; mount it read-write or copy the store",
    errno.EACCES: "permission denied; fix the permissions of the store folder",
    errno.EPERM: "permission denied; fix the permissions of the store folder",
}
"""The errors of writing a file that say nothing about the file itself, each with its fix."""


def write_problem(text: str) -> str | None:
    """The fix for a write failure described in ``text`` (a DuckDB message), or None."""
    low = text.lower()
    for marker, fix in (("no space left", errno.ENOSPC), ("file too large", errno.EFBIG),
                        ("disk quota", errno.EDQUOT), ("read-only file system", errno.EROFS),
                        ("permission denied", errno.EACCES)):  # fmt: skip
        if marker in low:
            return WRITE_ERRNOS[fix]
    return None


@contextlib.contextmanager
def storage_errors(where: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write (disk full, file size limit, read-only, permissions) into one :class:`StorageError`.

    Everything committed before stays: batches and derived files are written atomically.
    """
    try:
        yield
    except OSError as exc:
        fix = WRITE_ERRNOS.get(exc.errno or 0)
        if fix is None:
            raise
        name = exc.filename or where
        raise StorageError(
            f"cannot write {name}: {fix}, then run the command again (what was committed before is kept)"
        ) from exc


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """The derived-files folder ``path``, created when missing; StorageError when something else is there."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists() or path.is_symlink():
        raise StorageError(
            f"{path} should be a folder of derived files but is a file; move it away (it is recreated)"
        )
    with storage_errors(path):
        path.mkdir(exist_ok=True)
    return path
