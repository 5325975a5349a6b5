"""A library that follows its files: which stored tracks moved, changed or vanished (``tagstore update``).

:func:`scan` compares every stored track (or those under the given folders) with the disk: same size and
mtime, or same content hash, is unchanged; other bytes at the stored path is *changed* (to re-embed); no
file at the stored path is *missing*, unless a file with the same content hash turns up under the folders
searched, which makes it *moved* (it keeps its id, embedding, tags and examples). Only files whose size
equals a missing track's are hashed in that search, so a scan costs a ``stat`` per file plus a hash per
candidate. :func:`apply_moves` records the moves; re-embedding and pruning are composed by :mod:`tagstore.api`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tagstore import fileio, ingest
from tagstore.catalogue import tracks as track_sql
from tagstore.errors import PathNotFoundError
from tagstore.store import Progress, Store


@dataclass
class UpdateReport:
    """What ``update`` found (and did): ``moved`` ``[{id, old_path, path}]``, ``changed``/``missing``
    ``[{id, path}]``, ``new`` (audio files under the folders that are not in the store), ``refitted`` tags."""

    moved: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    refitted: list[str] = field(default_factory=list)
    unchanged: int = 0
    pruned: bool = False
    dry_run: bool = False
    index_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _roots(paths: list[str]) -> list[str]:
    """Where moved files are looked for by default: the folder all ``paths`` share (a library's root), unless
    that is the file system's root or a top-level folder, else the top-most existing folders holding them."""
    folders = sorted({os.path.dirname(p) for p in paths})
    if not folders:
        return []
    common = os.path.commonpath(folders)
    if len(Path(common).parts) > 2 and os.path.isdir(common):
        return [common]
    out: list[str] = []
    for folder in folders:
        if out and (folder == out[-1] or folder.startswith(out[-1].rstrip(os.sep) + os.sep)):
            continue
        out.append(folder)
    return [f for f in out if os.path.isdir(f)]


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def scan(store: Store, paths: list[str | os.PathLike[str]] | None = None, progress: Progress | None = None) -> UpdateReport:
    """Compare the stored tracks (those under ``paths``, or all) with the disk; changes nothing."""
    report = UpdateReport()
    with store.reader() as con:
        rows = track_sql.fingerprints(con)  # (id, path, hash, size, mtime)
    if paths:
        missing_given = [str(p) for p in paths if not Path(p).expanduser().exists()]
        if missing_given:
            raise PathNotFoundError(f"no such file or folder: {missing_given[0]}; give folders that exist")
        roots = [os.path.realpath(Path(p).expanduser()) for p in paths]
        rows = [r for r in rows if _under(r[1], roots)]
    else:
        roots = _roots([r[1] for r in rows])
    gone: dict[int, tuple[str, str, int]] = {}  # id -> (path, hash, size)
    for i, (tid, path, digest, size, mtime) in enumerate(rows):
        if progress:
            progress(i, len(rows), path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            gone[tid] = (path, digest, size)
            continue
        except OSError as exc:
            report.failed.append({"id": tid, "path": path, "reason": f"cannot read it ({exc.strerror})"})
            continue
        if (st.st_size, st.st_mtime_ns) == (size, mtime):
            report.unchanged += 1
            continue
        try:
            same = fileio.file_hash(path) == digest
        except OSError as exc:
            report.failed.append({"id": tid, "path": path, "reason": f"cannot read it ({exc.strerror})"})
            continue
        if same:
            report.unchanged += 1  # touched, not changed
        else:
            report.changed.append({"id": tid, "path": path})
    _find_moves(store, roots, gone, report)
    if progress:
        progress(len(rows), len(rows), "")
    return report


def _find_moves(store: Store, roots: list[str], gone: dict[int, tuple[str, str, int]], report: UpdateReport) -> None:
    with store.reader() as con:
        known = {r[1] for r in track_sql.fingerprints(con)}
    new = [str(p) for p in ingest.discover(roots)] if roots else []
    new = [p for p in new if p not in known]
    by_hash = {digest: tid for tid, (_, digest, _) in gone.items()}
    sizes = {size for _, _, size in gone.values()}
    for path in new:
        try:
            if os.stat(path).st_size not in sizes:
                report.new.append(path)
                continue
            digest = fileio.file_hash(path)
        except OSError as exc:
            report.failed.append({"id": None, "path": path, "reason": f"cannot read it ({exc.strerror})"})
            continue
        tid = by_hash.pop(digest, None)
        if tid is None:
            report.new.append(path)
        else:
            report.moved.append({"id": tid, "old_path": gone.pop(tid)[0], "path": path})
    report.missing = [{"id": tid, "path": path} for tid, (path, _, _) in sorted(gone.items())]


def apply_moves(store: Store, moved: list[dict[str, Any]]) -> None:
    """Give moved tracks their new paths (and the new files' size and mtime), in one transaction.

    The caller holds the write lock.
    """
    if not moved:
        return
    with store.transaction() as con:
        for m in moved:
            st = os.stat(m["path"])
            track_sql.move_track(con, m["id"], m["path"], st.st_size, st.st_mtime_ns)


def missing_tracks(store: Store) -> list[Any]:
    """Stored tracks whose file is gone (``tagstore tracks --missing``)."""
    return [t for t in store.tracks() if not os.path.exists(t.path)]
