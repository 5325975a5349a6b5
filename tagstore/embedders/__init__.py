"""Embedder registry: names map to import strings, so a backend (and torch) loads only when used.

A spec names one backend and its options: ``"dsp"``, ``"musicnn"``, ``"musicnn:model=MTT:layer=penultimate"``,
``"musicnn:layer=penultimate:pool=mean+std"``; or an alias of a weights bundle (``"vggish-pca"``, ``"openl3-6144"``).
Several specs joined by commas form a combined embedding (``"dsp,musicnn"``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from tagstore.embedders.base import Embedder
from tagstore.errors import MissingDependencyError, UnknownEmbedderError

__all__ = ["ALIASES", "Embedder", "REGISTRY", "available", "create", "join_plus", "parse_spec", "parse_specs"]

# name -> (import string "module:Class", extra that provides its dependencies or None)
REGISTRY: dict[str, tuple[str, str | None]] = {
    "dsp": ("tagstore.embedders.dsp:DSPEmbedder", None),
    "musicnn": ("tagstore.embedders.musicnn:MusicnnEmbedder", "torch"),
    "aisfx": ("tagstore.embedders.aisfx:AisfxEmbedder", "torch"),
    "vggish": ("tagstore.embedders.vggish:VGGishEmbedder", "torch"),
    "openl3": ("tagstore.embedders.openl3:OpenL3Embedder", "torch"),
    "passt": ("tagstore.embedders.passt:PaSSTEmbedder", "torch"),
}


ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "vggish-pca": ("vggish", {"pca": "true"}),
    "openl3-6144": ("openl3", {"embedding_size": "6144"}),
}
"""Names ``tagstore models list`` shows for a weights bundle that is an option of a backend."""


def available() -> list[str]:
    """Registered embedder names (whether or not their dependencies are installed)."""
    return sorted(REGISTRY)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"musicnn:model=MTT:layer=penultimate"`` -> ``("musicnn", {"model": "MTT", "layer": "penultimate"})``.

    An alias from :data:`ALIASES` names a backend with options: ``"vggish-pca"`` -> ``("vggish", {"pca": "true"})``.
    """
    name, *opts = [p.strip() for p in spec.strip().split(":")]
    options: dict[str, str] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise UnknownEmbedderError(
                f"bad embedder option {opt!r} in {spec!r}; write options as NAME:KEY=VALUE, e.g. musicnn:model=MTT"
            )
        options[key] = value
    if name in ALIASES:
        name, preset = ALIASES[name]
        options = {**preset, **options}
    if name not in REGISTRY:
        raise UnknownEmbedderError(
            f"unknown embedder {name!r}; choose from {', '.join(available() + sorted(ALIASES))}"
        )
    return name, options


def join_plus(text: str) -> str:
    """``"dsp+musicnn:pool=mean+std"`` -> ``"dsp,musicnn:pool=mean+std"``: a ``+`` before an embedder name joins
    specs into one combined layout (``tagstore eval``'s notation); one inside an option value stays."""
    names = "|".join(re.escape(n) for n in sorted([*REGISTRY, *ALIASES], key=len, reverse=True))
    return re.sub(rf"\+(?=(?:{names})(?::|\+|,|$))", ",", text)


def parse_specs(specs: str | list[str]) -> list[tuple[str, dict[str, str]]]:
    """Split a comma-separated spec list (or a list of specs) into parsed specs, rejecting repeats."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    parsed = [parse_spec(s) for s in items if s.strip()]
    if not parsed:
        raise UnknownEmbedderError(f"no embedder named in {specs!r}; choose from {', '.join(available())}")
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise UnknownEmbedderError(f"embedder named twice in {specs!r}; name each backend once")
    return parsed


def create(name: str, options: dict[str, Any] | None = None, runtime: Mapping[str, Any] | None = None) -> Embedder:
    """Import and build the backend ``name`` with ``options`` (strings from a spec, or typed values).

    ``runtime``: settings that do not change the output (``weights_dir``, ``threads``), passed to the
    backends that take them; an option of the spec wins.
    """
    if name not in REGISTRY:
        raise UnknownEmbedderError(f"unknown embedder {name!r}; choose from {', '.join(available())}")
    target, extra = REGISTRY[name]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise UnknownEmbedderError(f"embedder {name!r} is not available in this version of tagstore") from exc
        hint = f"pip install 'tagstore[{extra}]'" if extra else f"pip install {exc.name}"
        raise MissingDependencyError(
            f"embedder {name!r} needs the package {exc.name!r}, which is not installed; run: {hint}"
        ) from exc
    cls = getattr(module, cls_name)
    kwargs = dict(options or {})
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in (runtime or {}).items():
        if value is not None and key in accepted and key not in kwargs:
            kwargs[key] = value
    return cls(**kwargs)
