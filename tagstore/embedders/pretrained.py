"""Pre-trained models: which exist, whether their weights are installed, and getting them.

The library behind ``tagstore models``: :func:`list_models`, :func:`fetch` and :func:`import_file`. Every
registered embedder is listed; those with a weights bundle (:data:`tagstore.embedders.weights.BUNDLES`) can be
fetched or imported. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tagstore.embedders import weights
from tagstore.embedders import REGISTRY
from tagstore.errors import UnknownEmbedderError

__all__ = ["ModelInfo", "list_models", "fetch", "import_file"]


@dataclass(frozen=True)
class ModelInfo:
    """One model as ``tagstore models list`` shows it."""

    name: str
    dim: int | None
    """Default embedding size, None when unknown."""
    sample_rate: int | None
    """Input rate in Hz, None when unknown."""
    licence: str
    present: bool
    """Whether its weights are installed in the cache."""
    source: str | None
    """Where ``fetch`` gets the weights (``pypi:...`` or a URL), None without a known bundle."""
    verified: bool | None
    """Whether the installed weights' source digest was verified (None when not installed)."""
    path: str | None
    """The cache folder of its weights, None without a known bundle."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bundle(name: str) -> weights.WeightsBundle:
    if name in weights.BUNDLES:
        return weights.BUNDLES[name]
    known = ", ".join(sorted(weights.BUNDLES)) or "none"
    if name in REGISTRY:
        raise UnknownEmbedderError(f"no downloadable weights are known for {name!r}; models with weights: {known}")
    raise UnknownEmbedderError(f"unknown model {name!r}; models with weights: {known}")


def list_models(weights_dir: Path | None = None) -> list[ModelInfo]:
    """Every registered embedder and every weights bundle, sorted by name, with their cache state.

    ``weights_dir`` defaults to :func:`tagstore.embedders.weights.default_weights_dir`.
    """
    out = []
    for name in sorted(set(REGISTRY) | set(weights.BUNDLES)):
        bundle = weights.BUNDLES.get(name)
        if bundle is None:
            out.append(_weightless(name))
            continue
        manifest = weights.read_manifest(bundle, weights_dir)
        present = manifest is not None and all(
            (weights.bundle_dir(bundle, weights_dir) / f).is_file() and f in manifest["files"] for f in bundle.files
        )
        out.append(ModelInfo(
            name=name,
            dim=bundle.dim,
            sample_rate=bundle.sample_rate,
            licence=bundle.licence,
            present=present,
            source=bundle.source,
            verified=bool(manifest.get("verified")) if present and manifest else None,
            path=str(weights.bundle_dir(bundle, weights_dir)),
        ))
    return out


def _weightless(name: str) -> ModelInfo:
    """A registered embedder without a weights bundle: built in (needs no weights) when it has no extra."""
    from tagstore.embedders import REGISTRY, create

    if REGISTRY[name][1] is not None:  # needs an optional dependency: do not import it just to list it
        return ModelInfo(name, None, None, "unknown", False, None, None, None)
    emb = create(name)
    return ModelInfo(name, emb.dim, emb.sample_rate, emb.licence, True, "built in", None, None)


def fetch(name: str, progress: weights.Say | None = None, weights_dir: Path | None = None) -> Path:
    """Download ``name``'s weights, verify their digest and install them in the cache; returns its folder.

    ``progress`` receives one-line messages. Raises UnknownEmbedderError, EmbedderError (download failed)
    or WeightsDigestError (the download is not the published file).
    """
    return weights.fetch(_bundle(name), weights_dir, progress)


def import_file(
    name: str,
    path: str | Path,
    unverified: bool = False,
    progress: weights.Say | None = None,
    weights_dir: Path | None = None,
) -> Path:
    """Install ``name``'s weights from a local copy of its published file; returns the cache folder.

    The file's digest must match the bundle's (WeightsDigestError naming both otherwise) unless
    ``unverified``; the manifest then records ``verified: false``.
    """
    return weights.install(_bundle(name), Path(path), weights_dir, unverified=unverified, progress=progress)
