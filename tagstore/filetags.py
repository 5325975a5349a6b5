"""Tags into the audio files (``tagstore write``) and back out again (``write --undo``), with mutagen.

One field per run, and only that field is touched: every other tag keeps its value (the file is parsed,
the one field replaced, and the file rewritten atomically with :func:`tagstore.fileio.atomic_write`,
keeping its permission bits). Where each format keeps a multi-valued field:

- ID3v2 (MP3, and the ID3 chunk of WAV and AIFF): ``TXXX:<field>``, values null-separated (ID3v2.4; a file
  already at v2.3 stays v2.3 and gets them joined by ``/``); ``GENRE`` and ``MOOD`` go to ``TCON``/``TMOO``.
- Vorbis comments (FLAC, Ogg Vorbis, Opus): the field repeated once per value.
- MP4/M4A: a freeform atom ``----:com.apple.iTunes:<field>`` with one UTF-8 value each; ``GENRE`` to ``©gen``.
- APEv2 (WavPack, Monkey's Audio, Musepack): the field with null-separated values.

The store must not think a written file changed (it would re-embed it): after each write the track's
stored fingerprint (content hash, size, mtime) is updated to the new file's, in the same transaction
that logs the write. A file whose bytes differ from the stored fingerprint *before* the write (edited
since it was added) is not written: ``tagstore update`` first. Each write is logged (the field's old and
new values, the file's hash either side); :func:`undo` puts back the old values of the latest run.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tagstore import fileio
from tagstore.catalogue import filewrites as log_sql
from tagstore.catalogue import tracks as track_sql
from tagstore.catalogue.filewrites import LoggedWrite, WriteCandidate
from tagstore.errors import InputError
from tagstore.store import Progress, Store

DEFAULT_FIELD = "TAGSTORE"
SOURCES = ("learned", "model", "both")
COMMIT_EVERY = 32
"""Files whose log entries and fingerprints are committed together."""


class TagWriteError(Exception):
    """A file whose tags cannot be read or written (the reason is reported for that file; the run goes on)."""


@dataclass
class WriteReport:
    """What a write (or undo) did, per file: ``written``/``unchanged`` ``[{id, path, old, new}]``, ``failed``
    ``[{id, path, reason}]``; ``old``/``new`` are the field's values (None: absent)."""

    field: str
    run: int | None = None
    dry_run: bool = False
    undo: bool = False
    written: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- one field of one file ------------------------------------------------------------------------


class _Field:
    """How one tag format keeps the field ``name``: read its values, replace or remove them."""

    def __init__(self, tags: Any, name: str) -> None:
        self.tags, self.name = tags, name

    def get(self) -> list[str] | None:
        raise NotImplementedError

    def set(self, values: list[str] | None) -> None:
        raise NotImplementedError

    def save_kwargs(self) -> dict[str, Any]:
        return {}


class _ID3Field(_Field):
    def _key(self) -> str:
        return {"GENRE": "TCON", "MOOD": "TMOO"}.get(self.name.upper(), f"TXXX:{self.name}")

    def get(self) -> list[str] | None:
        frames = self.tags.getall(self._key())
        return [str(t) for fr in frames for t in fr.text] if frames else None

    def set(self, values: list[str] | None) -> None:
        from mutagen import id3

        key = self._key()
        self.tags.delall(key)
        if values is not None:
            frame = id3.TXXX(encoding=3, desc=self.name, text=values) if key.startswith("TXXX:") else \
                id3.Frames[key](encoding=3, text=values)  # fmt: skip
            self.tags.add(frame)

    def save_kwargs(self) -> dict[str, Any]:
        return {"v2_version": 3 if self.tags.version[1] == 3 else 4}


class _VorbisField(_Field):
    def get(self) -> list[str] | None:
        return list(self.tags[self.name]) if self.name in self.tags else None

    def set(self, values: list[str] | None) -> None:
        if self.name in self.tags:
            del self.tags[self.name]
        if values is not None:
            self.tags[self.name] = values


class _MP4Field(_Field):
    def _key(self) -> str:
        return "\xa9gen" if self.name.upper() == "GENRE" else f"----:com.apple.iTunes:{self.name}"

    def get(self) -> list[str] | None:
        values = self.tags.get(self._key())
        if values is None:
            return None
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]

    def set(self, values: list[str] | None) -> None:
        from mutagen.mp4 import AtomDataType, MP4FreeForm

        key = self._key()
        self.tags.pop(key, None)
        if values is not None:
            self.tags[key] = values if key == "\xa9gen" else \
                [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]  # fmt: skip


class _APEField(_Field):
    def get(self) -> list[str] | None:
        return [str(v) for v in self.tags[self.name]] if self.name in self.tags else None

    def set(self, values: list[str] | None) -> None:
        if self.name in self.tags:
            del self.tags[self.name]
        if values is not None:
            self.tags[self.name] = values


def _field_of(tags: Any, name: str) -> _Field | None:
    from mutagen._vorbis import VComment
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4Tags

    for kind, cls in ((ID3, _ID3Field), (VComment, _VorbisField), (MP4Tags, _MP4Field), (APEv2, _APEField)):
        if isinstance(tags, kind):
            return cls(tags, name)
    return None


def _load(path: str, name: str, data: bytes | None = None) -> tuple[Any, io.BytesIO, _Field]:
    """The parsed file (from ``data``, else read), its bytes in memory and its field ``name``."""
    import mutagen

    buffer = io.BytesIO(Path(path).read_bytes() if data is None else data)
    buffer.name = path  # type: ignore[attr-defined]  # mutagen guesses the format from the name too
    try:
        f = mutagen.File(buffer)
    except mutagen.MutagenError as exc:
        raise TagWriteError(f"cannot read its tags ({exc})") from None
    if f is None:
        raise TagWriteError("unsupported format: mutagen does not know this kind of file")
    if f.tags is None:
        try:
            f.add_tags()
        except Exception as exc:  # noqa: BLE001 - mutagen raises several kinds for "no tags here"
            raise TagWriteError(f"{type(f).__name__} files cannot hold tags ({exc})") from None
    adapter = _field_of(f.tags, name)
    if adapter is None:
        raise TagWriteError(f"unsupported format: {type(f).__name__} tags ({type(f.tags).__name__}) are not written")
    return f, buffer, adapter


def read_field(path: str | os.PathLike[str], name: str = DEFAULT_FIELD) -> list[str] | None:
    """The values of field ``name`` in an audio file (None: absent); TagWriteError when unsupported."""
    return _load(os.fspath(path), name)[2].get()


def rewrite_field(path: str | os.PathLike[str], name: str, values: list[str] | None) -> fileio.Written:
    """Replace field ``name`` by ``values`` (None: remove it), keeping every other tag; atomic.

    TagWriteError for an unsupported or unreadable file, OSError when it cannot be written.
    """
    path = os.fspath(path)
    st = os.stat(path)
    f, buffer, adapter = _load(path, name)
    adapter.set(values)
    try:
        buffer.seek(0)
        f.save(buffer, **adapter.save_kwargs())
    except Exception as exc:  # noqa: BLE001 - mutagen's save errors vary by format
        raise TagWriteError(f"cannot write its tags ({exc})") from None
    return fileio.atomic_write(path, buffer.getvalue(), mode=st.st_mode)


# --- a run over the catalogue ------------------------------------------------------------------------


def _check_file(path: str, content_hash: str, size: int, mtime_ns: int) -> str | None:
    """Why a stored file cannot be written now (missing, read-only, changed since it was added), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing: the file is gone; run `tagstore update` to find moved files"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    # The mode bits too: root may write anything, but a file marked read-only is the user's "leave it alone".
    if not os.access(path, os.W_OK) or not st.st_mode & 0o222:
        return "read-only file; make it writable (chmod u+w) to write its tags"
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns) and fileio.file_hash(path) != content_hash:
        return "changed since it was added; run `tagstore update` first, then write again"
    return None


def _value(c: WriteCandidate) -> str:
    return c.tag.split(":", 1)[1] if c.kind == "model" and ":" in c.tag else c.tag


def _proposals(candidates: list[WriteCandidate]) -> list[tuple[WriteCandidate, list[str]]]:
    """Per track (by id): its first candidate row and the values to write, best score first, no repeats."""
    out: dict[int, tuple[WriteCandidate, list[str]]] = {}
    for c in candidates:
        first, values = out.setdefault(c.track_id, (c, []))
        if _value(c) not in values:
            values.append(_value(c))
    return list(out.values())


def check_field(name: str) -> str:
    """A field name: non-empty printable text without ``=`` or ``:`` (Vorbis and MP4 keys forbid them)."""
    clean = name.strip()
    if not clean or any(not ch.isprintable() or ch in "=:~" for ch in clean) or not clean.isascii():
        raise InputError(f"field {name!r} cannot be a tag field; use letters, digits, spaces or _ such as TAGSTORE or GENRE")
    return clean


class _Log:
    """Written files waiting for their log entry and new fingerprint to be committed together."""

    def __init__(self, store: Store, undoing: bool = False) -> None:
        self.store, self.undoing = store, undoing
        self.pending: list[tuple[LoggedWrite, fileio.Written]] = []

    def commit(self) -> None:
        if not self.pending:
            return
        with self.store.transaction() as con:
            for entry, written in self.pending:
                if self.undoing:
                    log_sql.mark_undone(con, entry.run, entry.track_id)
                else:
                    log_sql.log_write(con, entry)
                row = track_sql.by_id(con, entry.track_id)
                if row is not None and row.path == entry.path:
                    track_sql.set_fingerprint(con, entry.track_id, written.digest, written.size, written.mtime_ns)
        self.pending.clear()


def write(
    store: Store,
    source: str = "learned",
    field_name: str = DEFAULT_FIELD,
    tags: Sequence[str] | None = None,
    min_score: float | None = None,
    tracks: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> WriteReport:
    """Write each track's predicted tags into field ``field_name`` of its file; see the module docstring.

    ``source``: learned tags, model tags (above their threshold) or both; ``tags``: only these (of either
    kind); ``min_score``:
    only tags scoring at least this; ``tracks``: only these ids or stored paths. Tracks with nothing to
    write are left alone. The caller holds the write lock (unless ``dry_run``).
    """
    t0 = time.perf_counter()
    if source not in SOURCES:
        raise InputError(f"unknown tag source {source!r}; choose learned, model or both")
    name = check_field(field_name)
    # Named tags are written whatever their kind; otherwise the source picks the kinds.
    kinds = ["learned", "model"] if source == "both" or tags else [source]
    with store.reader() as con:
        ids = None if tracks is None else [store.track(t, con).id for t in tracks]
        if tags is not None:
            from tagstore.tags.examples import require_tag

            for tag in tags:
                require_tag(con, tag)
        todo = _proposals(log_sql.candidates(con, kinds, tags, min_score, ids))
        run = log_sql.next_run(con)
    report = WriteReport(field=name, run=None if dry_run else run, dry_run=dry_run)
    log = _Log(store)
    try:
        for i, (c, values) in enumerate(todo):
            if progress:
                progress(i, len(todo), c.path)
            item: dict[str, Any] = {"id": c.track_id, "path": c.path}
            reason = _check_file(c.path, c.content_hash, c.size_bytes, c.mtime_ns)
            try:
                old = None if reason else read_field(c.path, name)
            except (TagWriteError, OSError) as exc:
                reason = str(exc)
            if reason:
                report.failed.append({**item, "reason": reason})
                continue
            item.update(old=old, new=values)
            if old == values:
                report.unchanged.append(item)
                continue
            if dry_run:
                report.written.append(item)
                continue
            try:
                written = rewrite_field(c.path, name, values)
            except (TagWriteError, OSError) as exc:
                report.failed.append({"id": c.track_id, "path": c.path, "reason": str(exc)})
                continue
            report.written.append(item)
            log.pending.append((LoggedWrite(run, c.track_id, c.path, name, old, values, c.content_hash, written.digest), written))
            if len(log.pending) >= COMMIT_EVERY:
                log.commit()
    finally:
        log.commit()  # an interrupted run keeps the log of every file it wrote
    if progress:
        progress(len(todo), len(todo), "")
    report.seconds = time.perf_counter() - t0
    return report


def undo(store: Store, dry_run: bool = False, progress: Progress | None = None) -> WriteReport:
    """Put back the old values of every file the latest write run changed (files edited since are reported)."""
    t0 = time.perf_counter()
    with store.reader() as con:
        run = log_sql.last_run(con)
        entries = log_sql.run_writes(con, run) if run is not None else []
    if run is None:
        raise InputError("nothing to undo: no `tagstore write` run is in the write log")
    report = WriteReport(field=entries[0].field if entries else DEFAULT_FIELD, run=run, dry_run=dry_run, undo=True)
    log = _Log(store, undoing=True)
    try:
        for i, e in enumerate(entries):
            if progress:
                progress(i, len(entries), e.path)
            item = {"id": e.track_id, "path": e.path, "old": e.new_values, "new": e.old_values}
            try:
                now = fileio.file_hash(e.path)
            except FileNotFoundError:
                report.failed.append({**item, "reason": "missing: the file is gone; nothing restored"})
                continue
            except OSError as exc:
                report.failed.append({**item, "reason": f"cannot read it ({exc.strerror})"})
                continue
            if now != e.new_hash:
                report.failed.append({**item, "reason": "changed since tagstore wrote it; not restored"})
                continue
            if dry_run:
                report.written.append(item)
                continue
            try:
                written = rewrite_field(e.path, e.field, e.old_values)
            except (TagWriteError, OSError) as exc:
                report.failed.append({**item, "reason": str(exc)})
                continue
            report.written.append(item)
            log.pending.append((e, written))
            if len(log.pending) >= COMMIT_EVERY:
                log.commit()
    finally:
        if not dry_run:
            log.commit()
    report.seconds = time.perf_counter() - t0
    return report
