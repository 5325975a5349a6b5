"""Ingest: idempotence, duplicates, bad files, dry runs, removal and killed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import rows, write_clip

from tagstore import api
from tagstore.errors import (
    PathNotFoundError,
    StoreBusyError,
    TrackNotFoundError,
)
from tagstore.store import Store


def test_add_is_idempotent(store: Store, library: Path) -> None:
    first = api.add(store, [library])
    assert len(first.added) == 12 and not first.failed
    again = api.add(store, [library])
    assert again.added == [] and len(again.skipped) == 12
    assert all("already in the store" in s["reason"] for s in again.skipped)
    assert rows(store, "SELECT count(*), count(DISTINCT content_hash) FROM tracks") == [(12, 12)]
    assert rows(store, "SELECT count(*) FROM embeddings") == [(12,)]


def test_same_content_under_another_path_is_skipped(store: Store, library: Path, tmp_path: Path) -> None:
    api.add(store, [library / "a"])
    copy = tmp_path / "copy.wav"
    copy.write_bytes(next((library / "a").iterdir()).read_bytes())
    report = api.add(store, [copy])
    assert report.added == [] and "same content" in report.skipped[0]["reason"]


def test_bad_file_in_folder_is_skipped_with_reason(store: Store, library: Path) -> None:
    (library / "a" / "notes.wav").write_text("this is not audio")
    write_clip(library / "b" / "quiet.wav", "silence", seconds=2.0)
    write_clip(library / "b" / "blip.wav", "tone", seconds=0.1)
    report = api.add(store, [library])
    assert len(report.added) == 12
    failed = {Path(f["path"]).name: f for f in report.failed}
    assert failed["notes.wav"]["error"] == "NotAudioError"
    assert failed["quiet.wav"]["error"] == "SilentAudioError"
    assert failed["blip.wav"]["error"] == "TooShortAudioError"
    assert "notes.wav" in failed["notes.wav"]["reason"]
    assert {Path(f["path"]).name for f in store.failures()} == set(failed)
    # Fixing a file and adding again clears its failure record.
    write_clip(library / "a" / "notes.wav", "chord", seconds=2.0, seed=99)
    api.add(store, [library])
    assert "notes.wav" not in {Path(f["path"]).name for f in store.failures()}


def test_dry_run_changes_nothing(store: Store, library: Path) -> None:
    report = api.add(store, [library], dry_run=True)
    assert len(report.added) == 12 and report.dry_run
    assert rows(store, "SELECT count(*) FROM tracks") == [(0,)]


def test_missing_path_raises_before_anything_is_added(store: Store, library: Path) -> None:
    with pytest.raises(PathNotFoundError, match="nothing was added"):
        api.add(store, [library, library / "nope"])
    assert rows(store, "SELECT count(*) FROM tracks") == [(0,)]


def test_remove_drops_track_from_catalogue_and_index(store: Store, library: Path) -> None:
    api.add(store, [library])
    removed = api.remove(store, ["3"])
    assert [t.id for t in removed.tracks] == [3] and removed.refitted == []
    assert rows(store, "SELECT count(*) FROM tracks WHERE id = 3") == [(0,)]
    assert all(h.id != 3 for h in api.similar(store, 1, k=20)[1])
    assert api.info(store)["index"]["count"] == 11
    with pytest.raises(TrackNotFoundError):
        api.remove(store, ["3"])


def test_killed_ingest_resumes_without_loss_or_duplicates(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    n = 40
    for i in range(n):
        write_clip(folder / f"clip{i:03d}.wav", ("tone", "noise", "chord", "clicks")[i % 4], 4.0, seed=i)
    exe = Path(sys.executable).with_name("tagstore")
    env = {**os.environ, "TAGSTORE_STORE": str(store.path)}
    proc = subprocess.Popen([str(exe), "-q", "add", str(folder), "--batch-size", "2"], env=env)
    committed = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = rows(store, "SELECT count(*) FROM tracks")[0][0]
            except StoreBusyError:
                committed = 0
            if committed >= 4:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = rows(store, "SELECT count(*) FROM tracks")[0][0]
    assert 4 <= partial < n, "the run must have been killed part-way"
    assert rows(store, "SELECT count(*) FROM embeddings")[0][0] == partial  # whole batches only
    report = api.add(store, [folder])
    assert len(report.added) == n - partial and len(report.skipped) == partial and not report.failed
    assert rows(store, "SELECT count(*), count(DISTINCT path), count(DISTINCT content_hash) FROM tracks") == [(n, n, n)]
    assert rows(store, "SELECT count(*) FROM embeddings")[0][0] == n
    assert api.info(store)["index"]["count"] == n
    assert len(api.similar(store, 1, k=n)[1]) == n - 1
