"""The CLI: output formats, exit statuses and one-line errors, lazy imports, installed layout."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import cli, write_clip

from tagstore import catalogue as cat


@pytest.fixture
def populated(runner, tmp_path: Path, library: Path):  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    assert cli(runner, "--store", store, "init").exit_code == 0
    result = cli(runner, "--store", store, "add", library)
    assert result.exit_code == 0, result.output
    return store


def test_add_query_tracks_info(runner, populated: Path, library: Path) -> None:  # type: ignore[no-untyped-def]
    out = cli(runner, "--store", populated, "query", "similar", "1", "-k", "3", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["query"]["id"] == 1 and [r["rank"] for r in data["results"]] == [1, 2, 3]
    assert set(data["results"][0]) >= {"id", "path", "title", "artist", "score"}
    table = cli(runner, "--store", populated, "query", "similar", "1", "-k", "2")
    assert table.stdout.splitlines()[0].split()[:3] == ["#", "id", "score"]
    m3u = cli(runner, "--store", populated, "query", "similar", "1", "-k", "2", "--m3u").stdout.splitlines()
    assert m3u[0] == "#EXTM3U" and m3u[1].startswith("#EXTINF:") and len(m3u) == 7
    tracks = json.loads(cli(runner, "--store", populated, "tracks", "noise", "--json").stdout)
    assert len(tracks) == 3 and all("noise" in t["path"] for t in tracks)
    info = json.loads(cli(runner, "--store", populated, "info", "--json").stdout)
    assert info["counts"]["tracks"] == 12 and info["index"]["count"] == 12 and info["embedders"] == "dsp"


def test_add_reports_bad_file_and_exits_1(runner, populated: Path, library: Path) -> None:  # type: ignore[no-untyped-def]
    (library / "b" / "broken.flac").write_bytes(b"\x00" * 1000)
    result = cli(runner, "--store", populated, "add", library, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert len(report["skipped"]) == 12 and [Path(f["path"]).name for f in report["failed"]] == ["broken.flac"]
    listed = cli(runner, "--store", populated, "tracks", "--failed", "--json")
    assert [Path(f["path"]).name for f in json.loads(listed.stdout)] == ["broken.flac"]


def test_dry_run_lists_and_changes_nothing(runner, tmp_path: Path, library: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "s"
    cli(runner, "--store", store, "init")
    result = cli(runner, "--store", store, "add", "--dry-run", library)
    assert result.exit_code == 0 and result.stdout.count("would add") == 12
    assert json.loads(cli(runner, "--store", store, "info", "--json").stdout)["counts"]["tracks"] == 0


def test_remove_and_rebuild(runner, populated: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli(runner, "--store", populated, "remove", "2").stdout.startswith("removed 2")
    rebuilt = json.loads(cli(runner, "--store", populated, "rebuild", "--json").stdout)
    assert rebuilt["count"] == 11


def _error(result) -> str:  # type: ignore[no-untyped-def]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_user_errors_are_one_line_with_exit_1(runner, populated: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", populated]
    cases = {
        "missing path": (s + ["add", tmp_path / "nope.wav"], "no such file or folder"),
        "unknown track": (s + ["query", "similar", "999"], "no track '999'"),
        "missing store": (["--store", tmp_path / "void", "info"], "tagstore init"),
        "existing store": (["--store", populated, "init"], "already exists"),
        "unknown embedder": (["--store", tmp_path / "x", "init", "--embedders", "nope"], "unknown embedder 'nope'"),
        "bad factory": (["--store", tmp_path / "y", "init", "--index", "Bogus99"], "Bogus99"),
    }
    for name, (args, needle) in cases.items():
        result = cli(runner, *args)
        assert result.exit_code == 1, (name, result.output)
        assert needle in _error(result), name
    # An audio-less query file, an empty, a silent and a too-short file, each named in the message.
    bad = {
        "text.wav": (lambda p: p.write_text("hello"), "cannot be read as audio"),
        "silent.wav": (lambda p: write_clip(p, "silence", 2.0), "is silent"),
        "short.wav": (lambda p: write_clip(p, "tone", 0.1), "too short"),
        "empty.wav": (lambda p: write_clip(p, "tone", 0.0), "no audio"),
    }
    for fname, (make, needle) in bad.items():
        path = tmp_path / fname
        make(path)
        result = cli(runner, *s, "query", "similar", path)
        assert result.exit_code == 1, (fname, result.output)
        line = _error(result)
        assert needle in line and fname in line, line


def test_newer_store_format_and_busy_store(runner, populated: Path) -> None:  # type: ignore[no-untyped-def]
    from tagstore.catalogue import WriteLock

    with WriteLock(populated):
        line = _error(cli(runner, "--store", populated, "add", populated.parent / "music"))
        assert "is writing the store" in line
    with cat.transaction(populated) as con:
        cat.set_meta(con, "format_version", "99")
    result = cli(runner, "--store", populated, "info")
    assert result.exit_code == 1 and "format 99" in _error(result)


def test_usage_error_exits_2(runner) -> None:  # type: ignore[no-untyped-def]
    assert cli(runner, "query", "similar").exit_code == 2
    assert cli(runner, "no-such-command").exit_code == 2


def test_store_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tagstore.cli.common import resolve_store

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("TAGSTORE_STORE", raising=False)
    assert resolve_store(None) == tmp_path / "data" / "tagstore" / "store"
    (tmp_path / "cfg" / "tagstore").mkdir(parents=True)
    (tmp_path / "cfg" / "tagstore" / "config.toml").write_text('store = "/from/config"\n')
    assert resolve_store(None) == Path("/from/config")
    monkeypatch.setenv("TAGSTORE_STORE", "/from/env")
    assert resolve_store(None) == Path("/from/env")
    assert resolve_store(Path("/from/flag")) == Path("/from/flag")


def _modules_after(args: list[str], env_store: Path | None = None) -> set[str]:
    code = (
        "import sys\n"
        f"sys.argv = ['tagstore', *{args!r}]\n"
        "from tagstore.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED:' + ','.join(m for m in ('torch', 'faiss', 'tagstore.embedders.dsp') if m in sys.modules), file=sys.stderr)\n"
    )
    env = None
    if env_store is not None:
        import os

        env = {**os.environ, "TAGSTORE_STORE": str(env_store)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("LOADED:"), proc.stderr
    return set(filter(None, line.removeprefix("LOADED:").split(",")))


def test_help_does_not_import_torch_or_faiss() -> None:
    assert _modules_after(["--help"]) == set()


def test_query_by_id_and_path_does_not_import_torch(populated: Path, library: Path) -> None:
    loaded = _modules_after(["query", "similar", "1", "--json"], populated)
    assert "torch" not in loaded and "tagstore.embedders.dsp" not in loaded and "faiss" in loaded
    path = sorted((library / "a").iterdir())[0]
    assert "torch" not in _modules_after(["query", "similar", str(path.resolve())], populated)


def test_wheel_installs_only_the_tagstore_name(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("tagstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"tagstore", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "tagstore/cli/main.py" in names and "tagstore/indexes/__init__.py" in names
    assert "tagstore/py.typed" in names
    assert {f"tagstore/server/static/{f}" for f in ("index.html", "app.js", "style.css")} <= set(names)  # the web page
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tagstore = tagstore.cli.main:main" in entry


def test_init_alone_uses_the_default_layout_and_fetches_its_weights(runner, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    """`init` without --embedders builds config.DEFAULT_EMBEDDERS; a default that needs weights fetches the
    missing ones (a progress line on stderr) and, offline, fails with one line naming `models import`.
    The downloads are stood in for by the cached aisfx wheel; tests never touch the network."""
    import shutil

    from tagstore import config
    from tagstore.embedders import weights
    from tagstore.errors import EmbedderError

    from tagstore.embedders import parse_specs
    from tagstore.store import Store

    monkeypatch.delenv("TAGSTORE_EMBEDDERS")
    assert config.DEFAULT_EMBEDDERS == "dsp,musicnn"  # measured: benchmarks/README.md
    missing = [n for n, _ in parse_specs(config.DEFAULT_EMBEDDERS) if n in weights.BUNDLES and weights.read_manifest(weights.BUNDLES[n]) is None]
    if missing:  # conftest installs them from the wheels `make test` caches; never from the network
        pytest.skip(f"no cached wheel for the default layout's {', '.join(missing)} weights (run `make test`)")
    result = cli(runner, "init", tmp_path / "plain")
    assert result.exit_code == 0, result.output
    store = Store.open(tmp_path / "plain")
    blocks = store.layout.blocks
    assert [(b.name, b.dim) for b in blocks] == [("dsp", 274), ("musicnn", 753)]
    assert blocks[1].options == {"model": "MSD", "layer": "max_pool"} and "fetching" not in result.stderr
    store.close()
    wheel = Path(__file__).resolve().parents[1] / ".cache" / "aisfx-0.1.2-py2.py3-none-any.whl"
    if not wheel.is_file():
        pytest.skip(f"no cached {wheel.name} (run `make test`)")
    monkeypatch.setattr(config, "DEFAULT_EMBEDDERS", "dsp,aisfx")
    monkeypatch.setenv("TAGSTORE_WEIGHTS_DIR", str(tmp_path / "weights"))

    def offline(bundle, dest, progress=None):  # type: ignore[no-untyped-def]
        raise EmbedderError(f"pip could not download {bundle.source[5:]} (no network); check the network, or "
                            f"download {bundle.file_name} elsewhere and run `{bundle.import_command()}`")

    monkeypatch.setattr(weights, "download", offline)
    result = cli(runner, "init", tmp_path / "offline")
    assert result.exit_code == 1 and "tagstore models import aisfx" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 2  # progress, error
    monkeypatch.setattr(weights, "download", lambda bundle, dest, progress=None: Path(shutil.copy(wheel, dest)))
    result = cli(runner, "init", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert "fetching them (tagstore models fetch aisfx)" in result.stderr and "dsp,aisfx" in result.stdout
    result = cli(runner, "init", tmp_path / "explicit", "--embedders", "musicnn:weights_dir=" + str(tmp_path / "none"))
    assert result.exit_code == 1 and "tagstore models fetch musicnn" in result.stderr  # named: no fetching
