"""The label table of an evaluation: ``labels.csv`` with columns path, track, tags, split.

``path`` is relative to the CSV's folder (or absolute), ``track`` groups clips of one recording (they
never straddle train and test), ``tags`` are semicolon-separated, ``split`` is ``train`` or ``test``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from tagstore.errors import InputError
from tagstore.evaluation.protocol import SPLITS

LABEL_COLUMNS = ("path", "track", "tags", "split")


@dataclass(frozen=True)
class LabelRow:
    """One row of labels.csv; ``path`` is relative to the CSV's folder."""

    path: str
    track: str
    tags: tuple[str, ...]
    split: str


@dataclass(frozen=True)
class Clip:
    """A usable row of the label table: ``id`` is the clip's resolved path (the protocol's clip id)."""

    id: str
    track: str
    tags: frozenset[str]
    split: str


def read_labels(csv_path: str | os.PathLike[str]) -> list[LabelRow]:
    """Read a labels.csv (columns path, track, tags, split); raises InputError if it is not one."""
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"no labels file at {path}: make one with `tagstore demo-corpus`")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(LABEL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(sorted(missing))}: "
                             f"expected {','.join(LABEL_COLUMNS)}")  # fmt: skip
        return [LabelRow(r["path"], r["track"], tuple(t for t in r["tags"].split(";") if t), r["split"])
                for r in reader]  # fmt: skip


def read_clips(labels_csv: str | os.PathLike[str]) -> list[Clip]:
    """The label table with paths resolved against the CSV's folder; InputError on a bad row."""
    csv_path = Path(labels_csv).expanduser()
    rows = read_labels(csv_path)
    if not rows:
        raise InputError(f"{csv_path} lists no clips; add rows path,track,tags,split")
    base, seen, clips = csv_path.absolute().parent, set(), []
    for line, row in enumerate(rows, start=2):
        path = os.path.realpath(base / Path(row.path).expanduser())
        if not row.path or not os.path.isfile(path):
            raise InputError(f"{csv_path} line {line}: no audio file {row.path!r} (looked for {path}); "
                             "paths are relative to the CSV's folder")  # fmt: skip
        if row.split not in SPLITS:
            raise InputError(f"{csv_path} line {line}: split {row.split!r}; use 'train' or 'test'")
        if path in seen:
            raise InputError(f"{csv_path} line {line}: {row.path!r} is listed twice; give each clip one row")
        seen.add(path)
        clips.append(Clip(path, row.track or path, frozenset(row.tags), row.split))
    return clips
