"""`tagstore write`: tags into real files of each format, read back with mutagen; dry run, undo, no re-embed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import cli, synth
from test_audio import write_pyav

from tagstore import filetags


def _make(path: Path, kind: str, seed: int) -> Path:
    """A real file of ``path``'s format (2.5 s of ``kind``), with a title, an artist and one unrelated custom tag."""
    import mutagen
    from mutagen import id3

    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix
    if ext in (".m4a", ".wv"):
        x = synth(kind, 2.5, 44100, seed)
        write_pyav(path, "aac" if ext == ".m4a" else "wavpack", x, 44100)
    else:
        sr = 48000 if ext == ".opus" else 22050
        kw = {".mp3": {"format": "MP3"}, ".ogg": {"format": "OGG", "subtype": "VORBIS"},
              ".opus": {"format": "OGG", "subtype": "OPUS"}}.get(ext, {})  # fmt: skip
        if ext == ".mp3" and "MP3" not in sf.available_formats():
            pytest.skip("libsndfile cannot write MP3")
        sf.write(str(path), synth(kind, 2.5, sr, seed), sr, **kw)
    f = mutagen.File(path)
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if isinstance(t, id3.ID3):
        t.add(id3.TIT2(encoding=3, text=[f"{kind} {seed}"]))
        t.add(id3.TPE1(encoding=3, text=["Synth"]))
        t.add(id3.TXXX(encoding=3, desc="OTHER", text=["keep", "me"]))
    elif ext == ".m4a":
        t["\xa9nam"], t["\xa9ART"] = [f"{kind} {seed}"], ["Synth"]
        t["----:com.apple.iTunes:OTHER"] = [b"keep", b"me"]
    else:
        t["title"], t["artist"], t["OTHER"] = [f"{kind} {seed}"], ["Synth"], ["keep", "me"]
    f.save()
    return path


FORMATS = [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".wv"]


def _others(path: Path) -> dict:
    """Every tag of the file except the TAGSTORE field, as mutagen reads it (values as text)."""
    import mutagen

    tags = mutagen.File(path).tags
    return {k: repr(v) for k, v in sorted(tags.items()) if "TAGSTORE" not in str(k).upper()}


@pytest.mark.parametrize("ext", FORMATS)
def test_rewrite_field_each_format(tmp_path: Path, ext: str) -> None:
    path = _make(tmp_path / f"clip{ext}", "chord", 1)
    before = _others(path)
    os.chmod(path, 0o640)
    assert filetags.read_field(path, "TAGSTORE") is None
    filetags.rewrite_field(path, "TAGSTORE", ["warm", "slow é"])
    assert filetags.read_field(path, "TAGSTORE") == ["warm", "slow é"]
    assert _others(path) == before  # unrelated tags unchanged
    assert filetags.read_field(path, "OTHER") == ["keep", "me"]
    assert os.stat(path).st_mode & 0o777 == 0o640  # permissions kept
    filetags.rewrite_field(path, "TAGSTORE", None)
    assert filetags.read_field(path, "TAGSTORE") is None and _others(path) == before
    from tagstore import audio

    assert abs(audio.probe(path).duration_s - 2.5) < 0.1  # still the same audio


def test_genre_goes_to_the_native_frames(tmp_path: Path) -> None:
    import mutagen

    mp3 = _make(tmp_path / "g.mp3", "tone", 2)
    filetags.rewrite_field(mp3, "GENRE", ["Jazz", "Waltz"])
    assert mutagen.File(mp3).tags.getall("TCON")[0].text == ["Jazz", "Waltz"]
    m4a = _make(tmp_path / "g.m4a", "tone", 3)
    filetags.rewrite_field(m4a, "GENRE", ["Jazz"])
    assert mutagen.File(m4a).tags["\xa9gen"] == ["Jazz"]


def test_unsupported_file_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("not audio")
    with pytest.raises(filetags.TagWriteError, match="unsupported format"):
        filetags.read_field(p)


@pytest.fixture
def tagged_store(runner, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A store over one file of each format (two kinds), with a learned tag 'tonal' on the chord/tone files."""
    music = tmp_path / "music"
    files = []
    for i, ext in enumerate(FORMATS):
        kind = "noise" if i % 2 else "chord"
        files.append(_make(music / f"{kind}_{i}{ext}", kind, i))
    store = tmp_path / "store"
    assert cli(runner, "--store", store, "init").exit_code == 0
    out = cli(runner, "--store", store, "add", music, "--json")
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["added"]) == len(FORMATS)
    chords = [str(f) for f in files if f.name.startswith("chord")]
    noises = [str(f) for f in files if f.name.startswith("noise")]
    r = cli(runner, "--store", store, "add-tag", "tonal", *sum((["-e", c] for c in chords), []),
            *sum((["-x", n] for n in noises), []))  # fmt: skip
    assert r.exit_code == 0, r.output
    return store, music, files


def _digests(files: list[Path]) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for f in files}


def test_write_dry_run_write_undo_and_no_reembed(runner, tagged_store) -> None:  # type: ignore[no-untyped-def]
    store, music, files = tagged_store
    s = ["--store", store]
    before = _digests(files)
    others = {str(f): _others(f) for f in files}
    dry = cli(runner, *s, "write", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert _digests(files) == before  # the dry run changes no byte
    lines = [ln for ln in dry.stdout.splitlines() if ln]
    chords = {str(f) for f in files if f.name.startswith("chord")}
    assert {ln.split(": ")[0] for ln in lines} >= chords
    assert all(ln.endswith("(none) → tonal") for ln in lines if ln.split(": ")[0] in chords)

    out = cli(runner, *s, "write", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    written = {w["path"] for w in report["written"]}
    assert written >= chords and not report["failed"]
    for f in files:
        assert filetags.read_field(f) == (["tonal"] if str(f) in written else None)
        assert _others(f) == others[str(f)]
    # The store does not think the files changed: a following add re-embeds nothing.
    again = json.loads(cli(runner, *s, "add", music, "--json").stdout)
    assert again["added"] == [] and again["updated"] == [] and len(again["skipped"]) == len(files)
    # Writing the same again changes nothing.
    assert json.loads(cli(runner, *s, "write", "--json").stdout)["written"] == []

    undo = cli(runner, *s, "write", "--undo", "--json")
    assert undo.exit_code == 0, undo.output
    assert {w["path"] for w in json.loads(undo.stdout)["written"]} == written
    for f in files:
        assert filetags.read_field(f) is None and _others(f) == others[str(f)]
    again = json.loads(cli(runner, *s, "add", music, "--json").stdout)
    assert again["added"] == [] and again["updated"] == []
    assert cli(runner, *s, "write", "--undo").exit_code == 1  # nothing left to undo


def test_write_reports_bad_files_and_goes_on(runner, tagged_store) -> None:  # type: ignore[no-untyped-def]
    store, music, files = tagged_store
    s = ["--store", store]
    chords = [f for f in files if f.name.startswith("chord")]
    ro, edited, gone = chords[0], chords[1], chords[2]
    os.chmod(ro, 0o444)
    with open(edited, "ab") as fh:
        fh.write(b"\0" * 16)
    moved_to = gone.with_name("elsewhere" + gone.suffix)
    gone.rename(moved_to)
    out = cli(runner, *s, "write", "--json")
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert "read-only" in reasons[ro.name] and "changed since it was added" in reasons[edited.name]
    assert "missing" in reasons[gone.name]
    assert {Path(w["path"]).name for w in report["written"]} == {f.name for f in chords[3:]}
    assert filetags.read_field(chords[3]) == ["tonal"]
    os.chmod(ro, 0o644)


def test_write_options(runner, tagged_store) -> None:  # type: ignore[no-untyped-def]
    store, _, files = tagged_store
    s = ["--store", store]
    assert json.loads(cli(runner, *s, "write", "--min-score", "2", "--json").stdout)["written"] == []
    r = cli(runner, *s, "write", "--tag", "nope")
    assert r.exit_code == 1 and "no tag 'nope'" in r.stderr
    r = cli(runner, *s, "write", "--source", "everything")
    assert r.exit_code == 1 and "everything" in r.stderr
    r = cli(runner, *s, "write", "--field", "A=B")
    assert r.exit_code == 1 and "'A=B'" in r.stderr
    chord = next(f for f in files if f.name.startswith("chord"))
    out = json.loads(cli(runner, *s, "write", str(chord), "--field", "MOOD", "--json").stdout)
    assert [w["path"] for w in out["written"]] == [str(chord)]
    assert filetags.read_field(chord, "MOOD") == ["tonal"] and filetags.read_field(chord) is None
