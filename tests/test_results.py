"""Results out: export / import-labels, update (moves, deletes, prune), remove refitting, listing formats,
M3U titles, `track`, completion scripts, the config file and progress log lines."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, write_clip


@pytest.fixture
def tagged(runner, tmp_path: Path, library: Path):  # type: ignore[no-untyped-def]
    """A store of the 12-clip library with a learned tag 'noisy' (3 noise clips +, 3 tones -)."""
    store = tmp_path / "store"
    assert cli(runner, "--store", store, "init").exit_code == 0
    assert cli(runner, "--store", store, "add", library).exit_code == 0
    noise = sorted(str(p) for p in library.rglob("noise_*.wav"))
    tone = sorted(str(p) for p in library.rglob("tone_*.wav"))
    r = cli(runner, "--store", store, "add-tag", "noisy", *sum((["-e", p] for p in noise), []),
            *sum((["-x", p] for p in tone), []))  # fmt: skip
    assert r.exit_code == 0, r.output
    return store


def _json(runner, *args):  # type: ignore[no-untyped-def]
    out = cli(runner, *args)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


# --- export and import-labels ---------------------------------------------------------------------


def test_export_every_format_reads_back_the_same(runner, tagged: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import duckdb

    s = ["--store", tagged]
    rows = _json(runner, *s, "export", "--format", "json")
    assert len(rows) == 12 and [r["id"] for r in rows] == list(range(1, 13))
    columns = list(rows[0])
    assert columns[:2] == ["id", "path"] and {"tags", "model_tags", "score:noisy"} <= set(columns)
    assert sum("noisy" in r["tags"] for r in rows) >= 3
    nl = [json.loads(line) for line in cli(runner, *s, "export", "--format", "nl").stdout.splitlines()]
    assert nl == rows
    text = cli(runner, *s, "export", "--format", "csv").stdout
    back = list(csv.DictReader(io.StringIO(text)))
    assert list(back[0]) == columns and len(back) == 12
    for r, c in zip(rows, back):
        assert c["path"] == r["path"] and c["tags"] == ";".join(r["tags"])
        assert float(c["score:noisy"]) == pytest.approx(r["score:noisy"])
    out = tmp_path / "cat.parquet"
    assert cli(runner, *s, "export", "--format", "parquet", "-o", out, "--embeddings").exit_code == 0
    con = duckdb.connect()
    rel = con.execute(f"SELECT * FROM read_parquet('{out}') ORDER BY id")
    names = [d[0] for d in rel.description]
    assert names == columns + ["embedding"]
    pq = [dict(zip(names, row)) for row in rel.fetchall()]
    assert len(pq) == 12 and all(len(r["embedding"]) == 274 for r in pq)
    for r, p in zip(rows, pq):
        assert p["path"] == r["path"] and p["tags"] == r["tags"] and p["score:noisy"] == pytest.approx(r["score:noisy"])
    # -o for a text format writes the same bytes as stdout; filters work like `tracks`.
    assert cli(runner, *s, "export", "-o", tmp_path / "x.csv").exit_code == 0
    assert (tmp_path / "x.csv").read_text() == text
    assert len(_json(runner, *s, "export", "noise", "--format", "json")) == 3
    bad = cli(runner, *s, "export", "--format", "xml")
    assert bad.exit_code == 1 and "'xml'" in bad.stderr
    assert cli(runner, *s, "export", "--format", "parquet").exit_code == 1  # binary: needs -o


def test_import_labels_all_or_nothing(runner, tagged: Path, library: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", tagged]
    chords = sorted(library.rglob("chord_*.wav"))
    clicks = sorted(library.rglob("clicks_*.wav"))
    good = tmp_path / "labels.csv"
    lines = ["path,track,tags,split,negative_tags"]
    lines += [f"{os.path.relpath(p, tmp_path)},{i},harmonic;soft,train," for i, p in enumerate(chords)]
    lines += [f"{p},{9 + i},,train,harmonic" for i, p in enumerate(clicks)]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines + ["/no/such/file.wav,99,harmonic,train,"]) + "\n")
    result = cli(runner, *s, "import-labels", bad)
    assert result.exit_code == 1 and "line 8" in result.stderr and "/no/such/file.wav" in result.stderr
    assert {t["name"] for t in _json(runner, *s, "tags", "--json")} == {"noisy"}  # nothing was imported
    good.write_text("\n".join(lines) + "\n")
    done = _json(runner, *s, "import-labels", good, "--json")
    assert [(d["name"], d["n_pos"], d["n_neg"]) for d in done] == [("harmonic", 3, 3), ("soft", 3, 0)]
    tone = _json(runner, *s, "tracks", "tone", "--json")[0]["id"]
    by_id = cli(runner, *s, "import-labels", _write(tmp_path / "ids.csv", f"id,tags\n{tone},soft\n"))
    assert by_id.exit_code == 0 and "soft: 4 positive" in by_id.stdout  # extends the tag
    unknown = cli(runner, *s, "import-labels", _write(tmp_path / "h.csv", "file,labels\nx,y\n"))
    assert unknown.exit_code == 1 and "lacks 'tags'" in unknown.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- update, moves, remove ------------------------------------------------------------------------


def test_update_moves_changes_and_prunes(runner, tagged: Path, library: Path) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", tagged]
    examples = _json(runner, *s, "tag-examples", "noisy", "--json")
    moved_src = Path(next(e["path"] for e in examples if e["label"] == "positive"))
    moved_id = next(e["id"] for e in examples if e["path"] == str(moved_src))
    dest = library / "elsewhere" / moved_src.name
    dest.parent.mkdir()
    moved_src.rename(dest)
    gone = Path(next(e["path"] for e in examples if e["label"] == "negative"))
    gone_id = next(e["id"] for e in examples if e["path"] == str(gone))
    gone.unlink()
    changed = sorted(library.rglob("clicks_*.wav"))[0]
    write_clip(changed, "clicks", seconds=2.0, seed=99)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))

    assert [t["id"] for t in _json(runner, *s, "tracks", "--missing", "--json")] == sorted([moved_id, gone_id])
    dry = _json(runner, *s, "update", "--dry-run", "--json")
    assert [m["id"] for m in dry["moved"]] == [moved_id] and [m["id"] for m in dry["missing"]] == [gone_id]
    assert [Path(c["path"]).name for c in dry["changed"]] == [changed.name]
    report = _json(runner, *s, "update", "--json")
    assert report["moved"] == [{"id": moved_id, "old_path": str(moved_src), "path": str(dest)}]
    assert [m["id"] for m in report["missing"]] == [gone_id] and not report["pruned"]
    track = _json(runner, *s, "track", str(moved_id), "--json")
    assert track["path"] == str(dest) and track["exists"]
    assert any(t["name"] == "noisy" and t["example"] == "positive" for t in track["tags"])  # tags kept
    assert [Path(c["path"]).name for c in report["changed"]] == [changed.name] and report["index_version"]
    again = _json(runner, *s, "add", library, "--json")
    assert again["added"] == [] and again["updated"] == [] and again["moved"] == []  # nothing left to do
    pruned = _json(runner, *s, "update", "--prune", "--json")
    assert pruned["pruned"] and pruned["refitted"] == ["noisy"]
    assert _json(runner, *s, "tracks", "--missing", "--json") == []
    assert {e["id"] for e in _json(runner, *s, "tag-examples", "noisy", "--json")} == {e["id"] for e in examples} - {gone_id}


def test_add_reports_a_move(runner, tagged: Path, library: Path) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", tagged]
    src = sorted(library.rglob("tone_*.wav"))[0]
    tid = _json(runner, *s, "track", str(src), "--json")["id"]
    dest = library / "renamed.wav"
    src.rename(dest)
    report = _json(runner, *s, "add", library, "--json")
    assert report["moved"] == [{"id": tid, "old_path": str(src), "path": str(dest)}] and report["added"] == []
    assert _json(runner, *s, "track", str(tid), "--json")["path"] == str(dest)


def test_remove_refits_the_tags_that_lose_an_example(runner, tagged: Path) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", tagged]
    before = {t["name"]: t for t in _json(runner, *s, "tags", "--json")}["noisy"]
    pos = next(e for e in _json(runner, *s, "tag-examples", "noisy", "--json") if e["label"] == "positive")
    out = cli(runner, *s, "remove", str(pos["id"]))
    assert out.exit_code == 0 and "refitted tag 'noisy'" in out.stderr
    after = {t["name"]: t for t in _json(runner, *s, "tags", "--json")}["noisy"]
    assert (before["n_pos"], after["n_pos"]) == (3, 2) and after["scored"] == 11
    untouched = _json(runner, *s, "remove", "--json", str(next(
        t["id"] for t in _json(runner, *s, "tracks", "chord", "--json"))))  # fmt: skip
    assert untouched["refitted"] == []


# --- listings ------------------------------------------------------------------------------------


LISTINGS = [
    ["tracks"], ["tags"], ["scores", "noisy"], ["query", "similar", "1", "-k", "3"], ["suggest", "noisy", "-n", "3"],
    ["propagate", "noisy", "-k", "2"],
]  # fmt: skip


@pytest.mark.parametrize("args", LISTINGS, ids=lambda a: a[0] if a[0] != "query" else "similar")
def test_every_listing_speaks_every_format(runner, tagged: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", tagged]
    data = _json(runner, *s, *args, "--json")
    rows = data["results"] if args[0] == "query" else data
    assert rows
    nl = [json.loads(line) for line in cli(runner, *s, *args, "--nl").stdout.splitlines()]
    assert nl == rows
    for flag, sep in (("--csv", ","), ("--tsv", "\t")):
        back = list(csv.DictReader(io.StringIO(cli(runner, *s, *args, flag).stdout), delimiter=sep))
        assert list(back[0]) == list(rows[0]) and len(back) == len(rows)
        assert [int(r["id"]) for r in back] == [r["id"] for r in rows] if "id" in rows[0] else True
    table = cli(runner, *s, *args)
    assert table.exit_code == 0 and len(table.stdout.splitlines()) == len(rows) + 2
    both = cli(runner, *s, *args, "--json", "--csv")
    assert both.exit_code == 2 and "cannot be combined" in both.output


def test_m3u_titles_and_title_fallback(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import mutagen

    music = tmp_path / "m"
    named = write_clip(music / "named.flac", "chord", 3.0, seed=1)
    f = mutagen.File(named)
    f["title"], f["artist"] = ["Song"], ["Band"]
    f.save()
    write_clip(music / "untitled take.wav", "tone", 2.0, seed=2)
    store = tmp_path / "s"
    cli(runner, "--store", store, "init")
    assert cli(runner, "--store", store, "add", music).exit_code == 0
    lines = cli(runner, "--store", store, "tracks", "--m3u").stdout.splitlines()
    assert lines == ["#EXTM3U", "#EXTINF:3,Band - Song", str(named.resolve()), "#EXTINF:2,untitled take",
                     str((music / "untitled take.wav").resolve())]  # fmt: skip
    sim = cli(runner, "--store", store, "query", "similar", "1", "-k", "1", "--m3u").stdout.splitlines()
    assert sim[1] == "#EXTINF:3,Band - Song" and sim[3] == "#EXTINF:2,untitled take"
    table = cli(runner, "--store", store, "tracks").stdout
    assert "untitled take" in table.splitlines()[3]
    assert cli(runner, "--store", store, "tags", "--kind", "learnt").exit_code == 2
    one = cli(runner, "--store", store, "track", "1")
    assert one.exit_code == 0 and "Band" in one.stdout and "Song" in one.stdout
    assert cli(runner, "--store", store, "track", "99").exit_code == 1


# --- completion, config, progress -------------------------------------------------------------------


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = f"import sys; sys.argv = ['tagstore', *{list(args)!r}]\nfrom tagstore.cli.main import main\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_completion_scripts_and_completing_is_fast() -> None:
    for shell, needle in (("bash", "complete_bash"), ("zsh", "compdef"), ("fish", "complete_fish")):
        proc = _run("--show-completion", shell, env={"SHELL": ""})
        assert proc.returncode == 0 and needle in proc.stdout and "tagstore" in proc.stdout, proc.stderr
    assert _run("--show-completion", "tcsh").returncode == 2
    t0 = time.perf_counter()
    code = ("import sys\nsys.argv = ['tagstore']\nfrom tagstore.cli.main import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED:' + ','.join(m for m in ('torch', 'faiss', 'duckdb') if m in sys.modules), file=sys.stderr)")  # fmt: skip
    env = {**os.environ, "_TAGSTORE_COMPLETE": "complete_bash", "COMP_WORDS": "tagstore wri", "COMP_CWORD": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.stdout.split() == ["write"], proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "LOADED:" and seconds < 5


def test_config_file_every_key_and_errors(runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from tagstore import config

    cfg = tmp_path / "config" / "tagstore" / "config.toml"
    cfg.parent.mkdir(parents=True)
    values = {"store": str(tmp_path / "st"), "weights_dir": str(tmp_path / "w"), "threads": 3, "embedders": "dsp",
              "index": "HNSW32", "write_field": "MOOD", "write_source": "both", "min_score": 0.25,
              "export_format": "nl", "search_device": "auto"}  # fmt: skip
    assert set(values) == set(config.KEYS)
    cfg.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    for env in ("TAGSTORE_THREADS", "TAGSTORE_WEIGHTS_DIR"):
        monkeypatch.delenv(env, raising=False)
    got = _json(runner, "config", "--json")["settings"]
    assert got == {k: v for k, v in values.items()}
    monkeypatch.setenv("TAGSTORE_WRITE_FIELD", "GENRE")  # the environment beats the file, a flag both
    assert _json(runner, "config", "--json")["settings"]["write_field"] == "GENRE"
    assert _json(runner, "--store", tmp_path / "flag", "config", "--json")["settings"]["store"] == str(tmp_path / "flag")
    # The example file names every key and parses back to the defaults.
    cfg.write_text(config.example_config())
    assert set(_json(runner, "config", "--json")["settings"]) == set(config.KEYS)
    for text, needle in (("store = [1\n", "not valid TOML"), ("stor = 'x'\n", "unknown key 'stor'"),
                         ("threads = 'many'\n", "'threads'"), ("write_source = 'all'\n", "'write_source'"),
                         ("min_score = true\n", "'min_score'")):  # fmt: skip
        cfg.write_text(text)
        out = cli(runner, "tracks")
        assert out.exit_code == 1, text
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.output, (text, out.stderr)


def test_progress_off_a_terminal_is_periodic_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from tagstore.cli import common

    bar = common.ProgressBar("adding", verb="added", every_s=0.0)
    assert not bar.tty
    bar(0, 964, "a.wav")
    time.sleep(0.01)
    bar(120, 964, "b.wav")
    bar(964, 964, "indexing")
    bar.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("added 120/964, ETA ") and err[0][-1] in "sm"
    assert common._duration(185) == "3m" and common._duration(42) == "42s" and common._duration(3720) == "1h02m"


def test_interrupt_says_what_was_committed() -> None:
    from tagstore.cli import common

    common.on_interrupt(lambda: "37 new tracks were committed")
    try:
        assert common.interrupted_message() == "interrupted: 37 new tracks were committed"
    finally:
        common.Interrupted.describe = None
    assert "run the command again" in common.interrupted_message()


def test_readme_cli_reference_is_the_real_help() -> None:
    from tagstore.cli import reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reference.section(readme) == reference.markdown(), (
        "README's CLI reference differs from the commands; run `python -m tagstore.cli.reference README.md`"
    )
    # The generator reads the real commands: every command `tagstore --help` lists has a row.
    from typer.testing import CliRunner

    from tagstore.cli.main import app

    listed = CliRunner().invoke(app, ["--help"]).stdout.split("Commands:")[1].split()
    usages = [u for u, _ in reference.rows()]
    for word in ("write", "update", "export", "import-labels", "track", "config"):
        assert word in listed and any(u.startswith(f"tagstore {word} ") or u == f"tagstore {word}" for u in usages)
