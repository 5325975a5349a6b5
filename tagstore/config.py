"""Configuration, resolved in one place: flag > environment variable > config file > default.

The CLI (and the server) call :meth:`Settings.resolve` once, at the edge; the library below takes the
resulting values as explicit arguments. The defaults a library call falls back to when given nothing
(:func:`default_weights_dir`, :func:`default_threads`) follow the same order, so a Python user gets
what the CLI would.

Config file: ``$TAGSTORE_CONFIG``, else ``$XDG_CONFIG_HOME/tagstore/config.toml``, else
``~/.config/tagstore/config.toml``; TOML with any of the keys of :data:`KEYS`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tagstore.errors import InputError, TagstoreError

STORE_ENV = "TAGSTORE_STORE"
CONFIG_ENV = "TAGSTORE_CONFIG"
WEIGHTS_ENV = "TAGSTORE_WEIGHTS_DIR"
THREADS_ENV = "TAGSTORE_THREADS"
EMBEDDERS_ENV = "TAGSTORE_EMBEDDERS"
INDEX_ENV = "TAGSTORE_INDEX"

DEFAULT_EMBEDDERS = "dsp,musicnn:layer=penultimate,aisfx"
"""`init`'s layout when none is named: the best offline layout measured on real audio (benchmarks/realset.py,
benchmarks/README.md); its weights come from PyPI on first use."""
MAX_THREADS = 1024
DEFAULT_INDEX = "Flat"


class ConfigError(InputError):
    """A config file that cannot be read, or a value in it of the wrong kind."""


def config_path() -> Path:
    """Where the config file is looked for."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(os.environ.get(CONFIG_ENV) or os.path.join(base, "tagstore", "config.toml"))


def default_store() -> Path:
    """The per-user store: ``$XDG_DATA_HOME/tagstore/store``, else ``~/.local/share/tagstore/store``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "tagstore" / "store"


def default_weights_dir() -> Path:
    """``$TAGSTORE_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/tagstore/weights``, else ``~/.cache/tagstore/weights``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tagstore" / "weights"


def usable_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads() -> int:
    """Compute threads for the models: ``$TAGSTORE_THREADS``, else ``$OMP_NUM_THREADS``, else the usable CPUs."""
    for env in (THREADS_ENV, "OMP_NUM_THREADS"):
        raw = os.environ.get(env, "").strip()
        if raw:
            return parse_threads(raw, f"${env}")
    return usable_cpus()


def parse_threads(raw: object, where: str, error: type[TagstoreError] = ConfigError) -> int:
    """A thread count (whole number >= 1); ``error`` naming ``where`` otherwise."""
    try:
        n = int(str(raw))
    except ValueError:
        raise error(f"{where}: threads must be a whole number, got {raw!r}") from None
    if n < 1:
        raise error(f"{where}: threads must be at least 1, got {n}")
    if n > MAX_THREADS:
        raise error(f"{where}: threads must be at most {MAX_THREADS}, got {n}")
    return n


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's table ({} when there is none); ConfigError, one line, when it is malformed."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = _toml().load(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}; fix or remove it") from None
    except Exception as exc:  # tomllib.TOMLDecodeError
        raise ConfigError(f"the config file {path} is not valid TOML ({exc}); fix or remove it") from None
    return data


@dataclass(frozen=True)
class Settings:
    """Everything the edge resolves: the store folder, the weights cache, model threads and init defaults."""

    store: Path
    weights_dir: Path
    threads: int
    embedders: str
    index: str

    @classmethod
    def resolve(cls, flags: Mapping[str, Any] | None = None, file: Mapping[str, Any] | None = None) -> Settings:
        """Each setting from the first of: ``flags`` (None = not given), environment, config file, default."""
        flags = dict(flags or {})
        unknown = set(flags) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        table = read_config_file() if file is None else dict(file)
        where = f"config file {config_path()}"
        for key, value in table.items():  # a bad value is reported even where a flag overrides it
            if key in {f.name for f in fields(cls)} and (not isinstance(value, (str, int)) or isinstance(value, bool)):
                raise ConfigError(f"{where}: key {key!r} must be text or a number, got {value!r}; fix or remove it")

        def pick(key: str, env: str | None) -> Any:
            if flags.get(key) is not None:
                return flags[key]
            if env and os.environ.get(env, "").strip():
                return os.environ[env].strip()
            if table.get(key) is not None:
                value = table[key]
                if not isinstance(value, (str, int)) or isinstance(value, bool):
                    raise ConfigError(f"{where}: key {key!r} must be text or a number, got {value!r}")
                return value
            return None

        store = pick("store", STORE_ENV)
        weights = pick("weights_dir", WEIGHTS_ENV)
        threads = pick("threads", THREADS_ENV)
        return cls(
            store=Path(str(store)).expanduser() if store is not None else default_store(),
            weights_dir=Path(str(weights)).expanduser() if weights is not None else default_weights_dir(),
            threads=parse_threads(threads, where if flags.get("threads") is None else "--threads")
            if threads is not None else default_threads(),
            embedders=str(pick("embedders", EMBEDDERS_ENV) or DEFAULT_EMBEDDERS),
            index=str(pick("index", INDEX_ENV) or DEFAULT_INDEX),
        )  # fmt: skip
