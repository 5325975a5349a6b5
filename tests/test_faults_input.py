"""Malformed input, generated here: damaged and special files, odd paths and names, every count option at
-1, 0, 2**63 and non-numbers, bad config files and damaged stores. Each case asserts the exit status, no
traceback, a one-line message, and a store unchanged (or grown by exactly the good files)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _faults import build_store, clips, copy_store, fingerprint
from conftest import write_clip

COUNT_VALUES = ["-1", "0", str(2**63), str(2**63 - 1), "1e10", "1.5", "abc", ""]
COUNT_OPTIONS = [
    ["query", "similar", "1", "-k"],
    ["propagate", "bright", "-k"],
    ["scores", "bright", "--top"],
    ["tracks", "--limit"],
    ["suggest", "bright", "-n"],
    ["add", "--batch-size"],
]
REFS = ["", " ", "¹", "٣", "-1", "0", "99999", str(2**63), "/dev/null", "/nonexistent/x.wav", "1.5", "x" * 3000,
        "1; DROP TABLE tracks", "%", "../../etc/passwd"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store, a folder of bad files (one case each), damaged stores and bad config files."""
    root = tmp_path_factory.mktemp("faults")
    store = build_store(root)
    bad = root / "bad"
    bad.mkdir()
    _make_bad_audio(bad, root / "base" / "clip_000.wav")
    damaged = root / "damaged"
    for name, damage in _DAMAGES.items():
        target = copy_store(store, damaged / name)
        damage(target / "catalogue.duckdb")
    return {"root": root, "store": store, "bad": bad, "damaged": damaged}


def _make_bad_audio(bad: Path, good: Path) -> None:
    rng = np.random.default_rng(7)
    sr = 22050
    for i, (ext, fmt) in enumerate((("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("aiff", "AIFF"))):
        clip = write_clip(bad / f"whole.{ext}.src", "tone", 2.0, format=fmt)
        data = clip.read_bytes()
        clip.unlink()
        (bad / f"empty.{ext}").write_bytes(b"")
        (bad / f"head10.{ext}").write_bytes(data[:10])
        (bad / f"head44.{ext}").write_bytes(data[:44])
        (bad / f"random.{ext}").write_bytes(rng.bytes(5000))
        (bad / f"zeros.{ext}").write_bytes(bytes(4096 + i))  # distinct contents: none is skipped as a duplicate
        (bad / f"text.{ext}").write_text(f"not {ext} audio at all\n" * 20)
        (bad / f"flipped-header.{ext}").write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])
    for ext in ("m4a", "mp3", "opus", "wma"):
        (bad / f"random.{ext}").write_bytes(rng.bytes(3000))
        (bad / f"empty.{ext}").write_bytes(b"")
    base = 0.2 * np.sin(np.arange(2 * sr) / sr * 2 * np.pi * 440).astype(np.float32)
    for name, value, at in (("nan", np.nan, 10), ("inf", np.inf, 1000), ("neginf", -np.inf, 30000),
                            ("huge", 1e30, 500), ("nan-last", np.nan, -1), ("allnan", np.nan, slice(None))):  # fmt: skip
        x = base.copy()
        x[at] = value
        sf.write(str(bad / f"{name}.wav"), x, sr, subtype="FLOAT")
    x = np.repeat(base[:, None], 2, axis=1)
    x[100, 1] = np.nan
    sf.write(str(bad / "nan-right-channel.wav"), x, sr, subtype="FLOAT")
    sf.write(str(bad / "nan-8k.wav"), np.where(np.arange(16000) == 5, np.nan, 0.1).astype(np.float32), 8000, subtype="FLOAT")
    sf.write(str(bad / "silence.wav"), np.zeros(2 * sr, np.float32), sr)
    sf.write(str(bad / "short.wav"), base[:50], sr)
    sf.write(str(bad / "one-sample.wav"), base[:1], sr)
    sf.write(str(bad / "rate1.wav"), base[:3], 1)
    os.mkfifo(bad / "fifo.wav")
    os.symlink("/nonexistent/target.wav", bad / "dangling.wav")
    os.symlink("loop.wav", bad / "loop.wav")
    os.symlink("/dev/zero", bad / "devzero.wav")
    (bad / "folder.wav").mkdir()
    name = os.fsencode(bad) + b"/latin1-\xe9\xff.wav"
    with open(name, "wb") as fh:
        fh.write(good.read_bytes() + b"\0")  # other content than the stored clip


def _flip(offset: int):  # type: ignore[no-untyped-def]
    def damage(path: Path) -> None:
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(b"\xaa" * 64)
    return damage


def _sql(statement: str):  # type: ignore[no-untyped-def]
    def damage(path: Path) -> None:
        import duckdb

        con = duckdb.connect(str(path))
        con.execute(statement)
        con.close()
    return damage


def _sqlite(path: Path) -> None:
    path.unlink()
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key, value)")
    con.commit()
    con.close()


_DAMAGES = {
    "flipped-header": _flip(100),
    "flipped-block": _flip(12388),
    "truncated": lambda p: os.truncate(p, 200_000),
    "truncated-8": lambda p: os.truncate(p, 8),
    "empty": lambda p: os.truncate(p, 0),
    "random": lambda p: p.write_bytes(np.random.default_rng(1).bytes(300_000)),
    "sqlite": _sqlite,
    "format-v2": _sql("UPDATE meta SET value = 'v2' WHERE key = 'format_version'"),
    "format-99": _sql("UPDATE meta SET value = '99' WHERE key = 'format_version'"),
    "generation-x": _sql("UPDATE meta SET value = 'x' WHERE key = 'generation'"),
    "layout-not-json": _sql("UPDATE meta SET value = 'notjson' WHERE key = 'layout'"),
    "layout-wrong": _sql("""UPDATE meta SET value = '[{"name": "dsp", "dim": 3}]' WHERE key = 'layout'"""),
    "no-meta": _sql("DROP TABLE meta"),
    "no-embeddings": _sql("DROP TABLE embeddings"),
    "no-scores": _sql("DROP TABLE tag_scores"),
    "one-byte-embedding": _sql("UPDATE embeddings SET vector = '\\x01'::BLOB WHERE track_id = 2"),
    "nan-embedding": _sql(
        "UPDATE embeddings SET vector = (SELECT vector FROM embeddings WHERE track_id = 2)[1:-5] || '\\x00\\x00\\xC0\\x7F'::BLOB "
        "WHERE track_id = 2"
    ),
}


def _cases() -> list[tuple[str, list[str], str]]:
    """``(id, arguments, kind)``: kind names how the result is judged (see test_malformed_input)."""
    cases: list[tuple[str, list[str], str]] = []
    for opt in COUNT_OPTIONS:
        for value in COUNT_VALUES:
            args = [*opt, value] + (["{bad}/empty.wav"] if opt[0] == "add" else [])
            cases.append((f"{' '.join(opt)} {value!r}", args, "error"))
    for i, ref in enumerate(REFS):
        cases.append((f"query similar {ref[:20]!r}", ["query", "similar", ref], "error"))
        cases.append((f"remove {ref[:20]!r}", ["remove", ref], "error"))
        if i % 2:
            cases.append((f"explain {ref[:20]!r}", ["explain", ref, "bright"], "error"))
        else:
            cases.append((f"add-tag -e {ref[:20]!r}", ["add-tag", "fresh", "-e", ref], "error"))
    for name in ("", " ", "\x07bell", "a" * 300, "\n"):
        cases.append((f"add-tag name {name[:10]!r}", ["add-tag", name, "-e", "1"], "error"))
        cases.append((f"scores name {name[:10]!r}", ["scores", name], "error"))
    cases += [
        ("add-tag -e 1 -x 1", ["add-tag", "bright", "-e", "1", "-x", "1"], "error"),
        ("add-tag no examples", ["add-tag", "fresh"], "error"),
        ("add-tag method", ["add-tag", "fresh", "-e", "1", "--method", "nope"], "error"),
        ("remove-tag model-less", ["remove-tag", "nope"], "error"),
        ("remove-examples not one", ["remove-examples", "bright", "7"], "error"),
        ("query both", ["query", "similar", "1", "--tag", "bright"], "error"),
        ("query neither", ["query", "similar"], "error"),
        ("query unknown tag", ["query", "similar", "1", "--with-tag", "nope"], "error"),
        ("query folder", ["query", "similar", "{bad}"], "error"),
        ("rebuild embedders without re-embed", ["rebuild", "-e", "dsp"], "error"),
        ("tag unknown", ["tag", "nope"], "error"),
        ("add empty path", ["add", ""], "error"),
        ("add missing", ["add", "{bad}/nope.wav"], "error"),
        ("backup into store", ["backup", "{store}/inside"], "error"),
        ("backup onto file", ["backup", "{bad}/text.wav"], "error"),
    ]
    for text, label in (("\xff\xfe\x00binary", "binary"), ("caf\xe9\n", "latin-1"), ("1\x002\n", "nul")):
        cases.append((f"examples-file {label}", ["add-tag", "fresh", "--examples-file", f"{{file:{label}}}"], "error"))
    cases.append(("examples-file folder", ["add-tag", "fresh", "--examples-file", "{bad}"], "error"))
    cases.append(("examples-file missing", ["add-tag", "fresh", "--examples-file", "{bad}/nope.txt"], "error"))
    for i, name in enumerate(_BAD_AUDIO_NAMES):
        cases.append((f"add {name}", ["add", f"{{bad}}/{name}"], "failed"))
        if "nan" in name or "inf" in name or name.startswith(("fifo", "devzero")):  # the on-the-fly path shares the checks
            cases.append((f"query {name}", ["query", "similar", f"{{bad}}/{name}"], "error"))
    cases.append(("query folder.wav", ["query", "similar", "{bad}/folder.wav"], "error"))
    for i, name in enumerate(_DAMAGES):
        for cmd in ([["query", "similar", "1"], ["add-tag", "bright", "-e", "4"]][i % 2],):
            cases.append((f"store {name}: {cmd[0]}", ["--store", f"{{damaged}}/{name}", *cmd], "damaged"))
    for label, path in (("file", "{bad}/text.wav"), ("missing", "{bad}/none"), ("dev-null", "/dev/null"),
                        ("not-a-store", "{bad}")):  # fmt: skip
        cases.append((f"--store {label}", ["--store", path, "info"], "error"))
    cases += [
        ("init below a file", ["init", "{bad}/text.wav/sub"], "error"),
        ("init on a file", ["init", "{bad}/text.wav"], "error"),
        ("init on a store", ["init", "{store}"], "error"),
        ("init unknown embedder", ["init", "{root}/new1", "-e", "nope"], "error"),
        ("init empty embedder", ["init", "{root}/new2", "-e", ","], "error"),
        ("init bad factory", ["init", "{root}/new3", "--index", "Bogus"], "error"),
    ]
    return cases


_BAD_AUDIO_NAMES = sorted(
    [f"{kind}.{ext}" for ext in ("wav", "flac", "ogg", "aiff")
     for kind in ("empty", "head10", "head44", "random", "zeros", "text", "flipped-header")]
    + [f"{kind}.{ext}" for ext in ("m4a", "mp3", "opus", "wma") for kind in ("random", "empty")]
    + ["nan.wav", "inf.wav", "neginf.wav", "huge.wav", "nan-last.wav", "allnan.wav", "nan-right-channel.wav",
       "nan-8k.wav", "silence.wav", "short.wav", "one-sample.wav", "rate1.wav", "fifo.wav", "dangling.wav",
       "loop.wav", "devzero.wav"]
)  # fmt: skip

CONFIGS = {
    "unclosed": "store = [",
    "binary": b"\xff\xfe\x00\x01",
    "latin-1": "store = 'caf\xe9'".encode("latin-1"),
    "store-list": "store = [1, 2]",
    "store-table": "[store]\nx = 1",
    "threads-text": "threads = 'many'",
    "threads-zero": "threads = 0",
    "threads-negative": "threads = -1",
    "threads-huge": f"threads = {2**63}",
    "bool": "threads = true",
}


def _fill(args: list[str], world: dict[str, Path], tmp: Path) -> list[str]:
    files = {"binary": b"\xff\xfe\x00binary", "latin-1": "caf\xe9\n".encode("latin-1"), "nul": b"1\x002\n"}
    out = []
    for a in args:
        for label, data in files.items():
            if a == f"{{file:{label}}}":
                (tmp / f"{label}.txt").write_bytes(data)
                a = str(tmp / f"{label}.txt")
        out.append(a.format(**{k: str(v) for k, v in world.items()}) if "{" in a and "{file:" not in a else a)
    return out


def _judge(result, kind: str) -> None:  # type: ignore[no-untyped-def]
    out = result.output
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if kind == "failed":  # a batch: the summary and one "failed:" line naming the file
        assert result.exit_code == 1, out
        failed = [line for line in lines if line.startswith("failed: ")]
        assert len(failed) == 1 and all(line.startswith(("added ", "failed: ")) for line in lines), lines
        return
    assert result.exit_code in (1, 2), (result.exit_code, out)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == 1, lines
    assert len(errors[0]) > len("error: ") + 10


CASES = _cases()


def test_the_campaign_is_large_enough() -> None:
    assert len(CASES) + len(CONFIGS) >= 150, len(CASES)


@pytest.mark.parametrize("args,kind", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input(world: dict[str, Path], runner, tmp_path: Path, args: list[str], kind: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli

    full = _fill(args, world, tmp_path)
    target = world["store"]
    if full[0] == "--store":
        target = Path(full[1])
    before = fingerprint(world["store"])
    damaged_before = target.joinpath("catalogue.duckdb").read_bytes() if kind == "damaged" else None
    result = cli(runner, *([] if full[0] == "--store" else ["--store", world["store"]]), *full)
    if kind == "damaged":
        # A damaged store: one line naming the damage, or (when the damage does not touch what the command
        # reads) success; the file is never made worse by a refused command.
        if result.exit_code != 0:
            _judge(result, "error")
            assert target.joinpath("catalogue.duckdb").read_bytes() == damaged_before
        assert "Traceback" not in result.output
        return
    _judge(result, kind)
    assert fingerprint(world["store"]) == before


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_config_file(world: dict[str, Path], runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli

    content = CONFIGS[name]
    path = tmp_path / "config.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setenv("TAGSTORE_CONFIG", str(path))
    monkeypatch.delenv("TAGSTORE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    result = cli(runner, "--store", world["store"], "query", "similar", "1")
    _judge(result, "error")
    assert "config" in result.stderr


@pytest.mark.parametrize("value", ["-1", "0", "abc", str(2**63), "1.5"])
def test_bad_thread_environment(world: dict[str, Path], runner, monkeypatch: pytest.MonkeyPatch, value: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli

    monkeypatch.setenv("TAGSTORE_THREADS", value)
    result = cli(runner, "--store", world["store"], "query", "similar", "1")
    _judge(result, "error")


def test_a_folder_of_bad_files_adds_every_good_one(world: dict[str, Path], runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One add over every bad file and three good ones: the store grows by exactly three, every bad file listed."""
    from conftest import cli
    from tagstore import api

    store = copy_store(world["store"], tmp_path / "grow")
    folder = tmp_path / "mixed"
    shutil.copytree(world["bad"], folder, symlinks=True, ignore=lambda d, names: [n for n in names if n == "fifo.wav"])
    os.mkfifo(folder / "fifo.wav")
    clips(folder / "good", 3, start=500)
    before = len(api.open(store).tracks())
    result = cli(runner, "--store", store, "add", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    audio_names = [n for n in os.listdir(os.fsencode(folder)) if os.path.splitext(n)[1].lower() in
                   {b".wav", b".flac", b".ogg", b".aiff", b".m4a", b".mp3", b".opus", b".wma"}
                   and n != b"folder.wav"]  # fmt: skip
    assert len(failed) == len(audio_names), (len(failed), len(audio_names), result.stderr)
    assert len(api.open(store).tracks()) == before + 3
