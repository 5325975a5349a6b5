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
SEARCH_DEVICE_ENV = "TAGSTORE_SEARCH_DEVICE"
SEARCH_DEVICES = ("cpu", "auto", "cuda")

DEFAULT_EMBEDDERS = "dsp,musicnn"
"""`init`'s layout when none is named: the best offline layout measured on real audio with tagstore's own
learners (benchmarks/realset.py, benchmarks/README.md); its weights come from PyPI on first use."""
MAX_THREADS = 1024
DEFAULT_INDEX = "auto"


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


KEYS: dict[str, tuple[type, str | None, str]] = {
    "store": (str, STORE_ENV, "the store folder (--store)"),
    "weights_dir": (str, WEIGHTS_ENV, "the weights cache (models fetch/import)"),
    "threads": (int, THREADS_ENV, "compute threads for the models"),
    "embedders": (str, EMBEDDERS_ENV, "init --embedders"),
    "index": (str, INDEX_ENV, "init --index"),
    "write_field": (str, "TAGSTORE_WRITE_FIELD", "write --field"),
    "write_source": (str, None, "write --source: learned, model or both"),
    "min_score": (float, None, "write --min-score"),
    "export_format": (str, None, "export --format: csv, json, nl or parquet"),
    "search_device": (str, SEARCH_DEVICE_ENV, "where the index searches: cpu, auto or cuda"),
}
"""Every key the config file may hold: its type, its environment variable (if any) and what it sets."""

DEFAULTS: dict[str, Any] = {
    "write_field": "TAGSTORE", "write_source": "learned", "min_score": None,
    "export_format": "csv", "search_device": "cpu",
}  # fmt: skip
CHOICES = {"write_source": ("learned", "model", "both"), "export_format": ("csv", "json", "nl", "parquet"),
           "search_device": SEARCH_DEVICES}  # fmt: skip


def _typed(key: str, value: Any, where: str) -> Any:
    """``value`` as the type of ``key``; ConfigError naming the key and ``where`` otherwise."""
    kind = KEYS[key][0]
    if isinstance(value, bool) or (kind is str and not isinstance(value, str)):
        raise ConfigError(f"{where}: key {key!r} must be {'text' if kind is str else 'a number'}, got {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: key {key!r} must be {'a whole number' if kind is int else 'a number'}, got {value!r}") from None
    if kind is int and (isinstance(value, float) or out < 1):
        raise ConfigError(f"{where}: key {key!r} must be a whole number of at least 1, got {value!r}")
    if key == "threads":
        out = parse_threads(out, f"{where}: key 'threads'")  # also at most MAX_THREADS
    if key in CHOICES and out not in CHOICES[key]:
        raise ConfigError(f"{where}: key {key!r} is not valid: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return out


def check_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The config file's keys, checked: an unknown key or a value of the wrong kind is a ConfigError naming it."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(KEYS)}")
    return {key: _typed(key, value, where) for key, value in table.items()}


@dataclass(frozen=True)
class Settings:
    """Everything the edge resolves: the store folder, the weights cache, model threads and every default a
    flag has (each a key of the config file, :data:`KEYS`)."""

    store: Path
    weights_dir: Path
    threads: int
    embedders: str
    index: str
    write_field: str = "TAGSTORE"
    write_source: str = "learned"
    min_score: float | None = None
    export_format: str = "csv"
    search_device: str = "cpu"
    """Where the index searches: ``cpu`` (default: a few CLI queries cost less than copying to a GPU),
    ``auto`` (a GPU when FAISS or torch sees one) or ``cuda``; see :func:`tagstore.indexes.devices.search_compute`."""

    @classmethod
    def resolve(cls, flags: Mapping[str, Any] | None = None, file: Mapping[str, Any] | None = None) -> Settings:
        """Each setting from the first of: ``flags`` (None = not given), environment, config file, default."""
        flags = dict(flags or {})
        unknown = set(flags) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        where = f"config file {config_path()}"
        table = check_table(read_config_file() if file is None else dict(file), where)

        def pick(key: str) -> Any:
            if flags.get(key) is not None:
                return flags[key]
            env = KEYS[key][1]
            if env and os.environ.get(env, "").strip():
                return _typed(key, os.environ[env].strip(), f"${env}")
            return table.get(key)

        store, weights = pick("store"), pick("weights_dir")
        threads = flags.get("threads")
        threads = parse_threads(threads, "--threads") if threads is not None else (
            table["threads"] if "threads" in table and not os.environ.get(THREADS_ENV, "").strip() else default_threads())
        rest = {key: pick(key) for key in DEFAULTS}
        return cls(
            store=Path(str(store)).expanduser() if store is not None else default_store(),
            weights_dir=Path(str(weights)).expanduser() if weights is not None else default_weights_dir(),
            threads=threads,
            embedders=str(pick("embedders") or DEFAULT_EMBEDDERS),
            index=str(pick("index") or DEFAULT_INDEX),
            **{key: DEFAULTS[key] if value is None else value for key, value in rest.items()},
        )  # fmt: skip


def example_config() -> str:
    """A config file naming every key with its default (``tagstore config --example``)."""
    lines = ["# tagstore config: " + str(config_path()), "# flag > environment variable > this file > default", ""]
    values = {"store": str(default_store()), "weights_dir": str(default_weights_dir()), "threads": usable_cpus(),
              "embedders": DEFAULT_EMBEDDERS, "index": DEFAULT_INDEX, **DEFAULTS}  # fmt: skip
    for key, (_, env, what) in KEYS.items():
        value = values[key]
        note = f"  # {what}" + (f"; ${env}" if env else "")
        if value is None:
            lines.append(f"# {key} = 0.5{note}")
        else:
            lines.append(f"{key} = {value!r}{note}" if not isinstance(value, str) else f'{key} = "{value}"{note}')
    return "\n".join(lines) + "\n"
