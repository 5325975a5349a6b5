"""Shared fixtures: synthesised audio (seeded numpy), temp stores, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050


def synth(kind: str, seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Mono float32 test signals: 'tone' (harmonic note), 'chord', 'noise', 'clicks' (a beat), 'silence'."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if kind == "tone":
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    elif kind == "chord":
        root = 220.0 * 2 ** (rng.integers(0, 12) / 12)
        x = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5))
    elif kind == "noise":
        x = rng.standard_normal(t.shape[0])
    elif kind == "clicks":
        bpm = rng.uniform(80, 160)
        x = np.zeros_like(t)
        period = int(sr * 60 / bpm)
        burst = rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
        for start in range(0, x.shape[0] - 200, period):
            x[start : start + 200] += burst
    elif kind == "silence":
        x = np.zeros_like(t)
    else:
        raise ValueError(kind)
    x = np.asarray(x, dtype=np.float64)
    peak = (np.max(np.abs(x)) if x.size else 0.0) or 1.0
    return (0.5 * x / peak * rng.uniform(0.5, 1.0)).astype(np.float32)


def music(
    seconds: float, seed: int = 0, sr: int = SR, harmonics: int = 7, tremolo_hz: float = 3.0
) -> np.ndarray:
    """A seeded harmonic note ``(n,)`` float32 with tremolo and a little noise (model-equivalence inputs)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, harmonics + 1))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * tremolo_hz * t)) + 0.05 * rng.standard_normal(t.shape[0])
    return (0.3 * x).astype(np.float32)


def write_clip(path: Path, kind: str, seconds: float = 3.0, sr: int = SR, seed: int = 0, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), synth(kind, seconds, sr, seed), sr, **kw)
    return path


def rows(store, sql: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    """The rows of a read-only query on a store's catalogue (tests look inside; the library never does this)."""
    from tagstore import catalogue as cat

    with cat.reading(store.path) as con:
        return con.execute(sql).fetchall()


KINDS = ("tone", "chord", "noise", "clicks")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A folder of 12 short clips of four kinds, in two sub-folders."""
    root = tmp_path / "music"
    for i in range(12):
        kind = KINDS[i % 4]
        write_clip(root / ("a" if i < 6 else "b") / f"{kind}_{i:02d}.wav", kind, seconds=2.0 + 0.25 * i, seed=i)
    return root


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_dir: Path):
    from tagstore.store import Store

    return Store.init(store_dir, embedders="dsp")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A Typer CliRunner with an isolated environment (no user config, no default store)."""
    from typer.testing import CliRunner

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("TAGSTORE_STORE", raising=False)
    # CLI tests build stores with dsp (fast, no weights); the default layout has its own test.
    monkeypatch.setenv("TAGSTORE_EMBEDDERS", "dsp")
    return CliRunner()


def cli(runner, *args: str):  # type: ignore[no-untyped-def]
    """Invoke the CLI in-process; returns the click Result (stdout, stderr, exit_code)."""
    from tagstore.cli.main import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True, scope="session")
def _private_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests never read or write the user's weights cache: a session cache, holding musicnn's and aisfx's
    real weights converted by this code when their wheels are at hand (``make test`` downloads them)."""
    root = tmp_path_factory.mktemp("weights-cache")
    os.environ["TAGSTORE_WEIGHTS_DIR"] = str(root)
    cache = Path(__file__).parents[1] / ".cache"
    for name, env, wheel_name in (("musicnn", "TAGSTORE_MUSICNN_WHEEL", "musicnn-0.1.0-py3-none-any.whl"),
                                  ("aisfx", "TAGSTORE_AISFX_WHEEL", "aisfx-0.1.2-py2.py3-none-any.whl")):
        wheel = Path(os.environ.get(env) or cache / wheel_name)
        if wheel.is_file():
            from tagstore.embedders import pretrained

            pretrained.import_file(name, wheel, weights_dir=root)
    return root


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run on 2 shared cores: one BLAS thread each keeps them predictable.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))


ARTISTS = {"tone": "The Harmonics", "chord": "Triad Quartet", "noise": "Static Unit", "clicks": "Metronome Club"}


def write_tagged_library(root: Path, n: int = 16) -> Path:
    """``n`` short FLAC clips of four kinds under ``root``, tagged with artist, title and album (mutagen)."""
    from mutagen.flac import FLAC

    for i in range(n):
        kind = KINDS[i % 4]
        path = write_clip(root / f"{kind}_{i:02d}.flac", kind, seconds=2.0 + 0.25 * (i % 3), seed=100 + i, format="FLAC")
        tags = FLAC(str(path))
        tags["title"], tags["artist"], tags["album"] = f"{kind.title()} study {i // 4 + 1}", ARTISTS[kind], f"{kind.title()}s"
        tags.save()
    return root


@pytest.fixture
def tagged_library(tmp_path: Path) -> Path:
    """A folder of 16 tagged FLAC clips of four kinds (see :func:`write_tagged_library`)."""
    return write_tagged_library(tmp_path / "tagged")
