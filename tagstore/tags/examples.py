"""A tag's examples: names, list files, resolving ids / stored paths / outside files, and the stored set."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagstore import audio
from tagstore.catalogue import Connection
from tagstore.catalogue import tags as tag_sql
from tagstore.catalogue.tags import StoredExample, TagRow
from tagstore.errors import InputError, TagError, TrackNotFoundError, UnknownTagError
from tagstore.store import OutsideFile, Store

MAX_TAG_NAME = 200


@dataclass
class Example:
    """A resolved example: a stored track (``track_id``) or an outside file (``path`` + its vector ``(dim,)``)."""

    label: int
    track_id: int | None
    path: str
    vector: np.ndarray | None = None
    content_hash: str | None = None

    def stored(self) -> StoredExample:
        """As the catalogue keeps it."""
        vector = None if self.vector is None else np.asarray(self.vector, dtype=np.float32).tobytes()
        return StoredExample(self.label, self.track_id, self.path, self.content_hash, vector)


def check_tag_name(name: str) -> str:
    """A tag name: trimmed, 1-200 printable characters (quotes, unicode and SQL are fine: all queries bind)."""
    clean = unicodedata.normalize("NFC", name.strip())
    if not clean:
        raise TagError("a tag name cannot be empty; give a name such as 'harpsichord'")
    if len(clean) > MAX_TAG_NAME:
        raise TagError(f"tag name {clean[:40]!r}... is {len(clean)} characters; use at most {MAX_TAG_NAME}")
    if any(unicodedata.category(ch).startswith("C") for ch in clean):
        raise TagError(f"tag name {clean!r} contains control characters; use printable text")
    return clean


def read_list_file(path: str | Path) -> list[str]:
    """Items from an examples file: one id or path per line; blank lines and ``#`` comments skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no examples file {p}; give a text file with one track id or path per line")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"the examples file {p} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8 with one track id or path per line"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read the examples file {p}: {exc.strerror}") from None
    if "\x00" in text:
        raise InputError(f"the examples file {p} holds NUL bytes (a binary file?); give a text file with one id or path per line")
    items = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(line)
    return items


def require_tag(con: Connection, name: str) -> TagRow:
    """A tag (learned or model) by name; UnknownTagError naming some learned tags otherwise."""
    row = tag_sql.tag_row(con, check_tag_name(name))
    if row is None:
        known = tag_sql.learned_names(con)
        hint = f" (learned tags: {', '.join(known)})" if known else ""
        raise UnknownTagError(f"no tag {name!r} in the store{hint}; learn it with `tagstore add-tag {name} --examples ...`")
    return row


def require_learned(con: Connection, name: str) -> int:
    """The id of a learned tag; TagError for a model tag, UnknownTagError for none."""
    row = require_tag(con, name)
    if row.kind != "learned":
        raise TagError(f"{name!r} is a {row.kind} tag (scored by its model); it cannot be changed")
    return row.id


def resolve_examples(store: Store, items: Sequence[str], label: int, con: Connection) -> list[Example]:
    """Resolve ids/stored paths to tracks and outside files to embedded vectors; raises before any write."""
    out: list[Example] = []
    outside: list[str] = []
    for item in items:
        try:
            ref = store.resolve(item, con)
        except (TrackNotFoundError, InputError):
            raise TrackNotFoundError(
                f"example {item!r} is neither a catalogue id, a stored path nor an audio file; see `tagstore tracks`"
            ) from None
        if isinstance(ref, OutsideFile):
            outside.append(ref.path)
        else:
            out.append(Example(label, ref.id, ref.path))
    for path in outside:
        vec = store.embedder().embed_file(path).vector  # AudioError names the file
        out.append(Example(label, None, path, vec, audio.file_hash(path)))
    return out


def not_stored(store: Store, items: Sequence[str]) -> list[str]:
    """The items that are not stored tracks (the files ``add-tag --add`` ingests first)."""
    with store.reader() as con:
        return [item for item in items if store.find(item, con) is None]


def stored_examples(con: Connection, tag_id: int) -> list[Example]:
    """A tag's examples as stored: catalogue tracks, then outside files with their vectors."""
    return [
        Example(s.label, s.track_id, s.path,
                None if s.vector is None else np.frombuffer(s.vector, dtype=np.float32).copy(), s.content_hash)
        for s in tag_sql.stored_examples(con, tag_id)
    ]  # fmt: skip


def merge(old: list[Example], new: list[Example]) -> list[Example]:
    """Later examples win: a track given again (maybe with the other label) replaces its old entry."""
    merged: dict[tuple[str, Any], Example] = {}
    for ex in old + new:
        key = ("track", ex.track_id) if ex.track_id is not None else ("file", ex.content_hash)
        merged.pop(key, None)
        merged[key] = ex
    return list(merged.values())


def tag_examples(store: Store, name: str) -> list[dict[str, Any]]:
    """A learned tag's examples: label (positive/negative), stored track id or outside path."""
    with store.reader() as con:
        tag_id = require_learned(con, check_tag_name(name))
        return [
            {"label": "positive" if e.label > 0 else "negative", "id": e.track_id, "path": e.path}
            for e in stored_examples(con, tag_id)
        ]
