"""Weights as frozen bundles: where each model's weights come from, how they are checked, where they live.

A :class:`WeightsBundle` (in the manner of torchaudio's pipelines) names one published artefact (a URL, or
a pinned requirement on PyPI fetched with pip), its file name, its digest, its licence and the converter
that turns it into the files a backend loads. Fetching or importing verifies the digest, converts into a
temporary folder and renames it into the cache, with a ``manifest.json`` recording what was installed and
the digest of every converted file. Loading reads only the cache and never touches the network.

Cache layout (``$TAGSTORE_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/tagstore/weights``, else
``~/.cache/tagstore/weights``)::

    <weights dir>/<bundle name>/manifest.json
    <weights dir>/<bundle name>/<converted files>
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tagstore.config import WEIGHTS_ENV, default_weights_dir
from tagstore.errors import EmbedderError, MissingWeightsError, PathNotFoundError, WeightsDigestError
from tagstore.fileio import atomic_write, file_hash, fsync_dir

__all__ = [
    "BUNDLES", "WEIGHTS_ENV", "WeightsBundle", "default_weights_dir", "bundle_dir", "file_digest",
    "read_manifest", "weights_file", "verify_file", "download", "install", "fetch",
    "is_published", "digest_matches", "pinned_digest",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

Say = Callable[[str], None]
"""Receives one-line messages of a fetch or install (not a progress bar)."""


@dataclass(frozen=True)
class WeightsBundle:
    """One frozen set of published weights and how it becomes the files a backend loads."""

    name: str
    """Bundle name, also the cache sub-folder (usually the embedder name)."""
    source: str
    """Where it comes from: ``"pypi:REQUIREMENT"`` (fetched with pip) or an ``https://`` / ``file://`` URL."""
    file_name: str
    """Name of the file the source yields, e.g. ``"musicnn-0.1.0-py3-none-any.whl"``."""
    digest: str
    """Digest of that file as ``"ALGORITHM:HEX"`` (any hashlib algorithm, e.g. ``"sha256:f38a..."``).

    A HEX of 8 to 63 digits is a prefix (torch.hub's convention: ``vggish-10086976.pth`` carries the first 8
    of its SHA-256); an empty HEX (``"sha256:"``) means none is published: trust on first use, the digest
    of the first installed file is recorded and later installs must match it (:func:`is_published`).
    """
    licence: str
    """Licence of the weights."""
    files: tuple[str, ...]
    """Files the converter writes into the cache folder (the source file itself when there is no converter)."""
    converter: str | None = None
    """``"module:function"`` called as ``function(source_file, out_dir)``; imported only when installing."""
    sample_rate: int | None = None
    """Input rate of the model in Hz (for listings)."""
    dim: int | None = None
    """Default embedding size (for listings)."""
    homepage: str = ""

    @property
    def algorithm(self) -> str:
        return self.digest.partition(":")[0]

    def fetch_command(self) -> str:
        return f"tagstore models fetch {self.name}"

    def import_command(self) -> str:
        return f"tagstore models import {self.name} {self.file_name}"


BUNDLES: dict[str, WeightsBundle] = {
    "musicnn": WeightsBundle(
        name="musicnn",
        source="pypi:musicnn==0.1.0",
        file_name="musicnn-0.1.0-py3-none-any.whl",
        digest="sha256:f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa",
        licence="ISC",
        files=("MSD_musicnn.safetensors", "MTT_musicnn.safetensors"),
        converter="tagstore.embedders.musicnn:convert_wheel",
        sample_rate=16000,
        dim=753,
        homepage="https://github.com/jordipons/musicnn",
    ),
    # aiSFX: the checkpoint ships inside the wheel; the wheel's SHA-256 is the one the package index publishes.
    "aisfx": WeightsBundle(
        name="aisfx",
        source="pypi:aisfx==0.1.2",
        file_name="aisfx-0.1.2-py2.py3-none-any.whl",
        digest="sha256:bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194",
        licence="CC-BY-4.0",
        files=("aisfx.safetensors",),
        converter="tagstore.embedders.aisfx:convert_wheel",
        sample_rate=44100,
        dim=512,
        homepage="https://github.com/alisonbma/aisfx",
    ),
    # VGGish: torchvggish's release files; the hex in each name is the start of its SHA-256 (torch.hub).
    "vggish": WeightsBundle(
        name="vggish",
        source="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        file_name="vggish-10086976.pth",
        digest="sha256:10086976",
        licence="Apache-2.0",
        files=("vggish.safetensors",),
        converter="tagstore.embedders.vggish:convert_weights",
        sample_rate=16000,
        dim=128,
        homepage="https://github.com/harritaylor/torchvggish",
    ),
    "vggish-pca": WeightsBundle(
        name="vggish-pca",
        source="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth",
        file_name="vggish_pca_params-970ea276.pth",
        digest="sha256:970ea276",
        licence="Apache-2.0",
        files=("vggish_pca_params.safetensors",),
        converter="tagstore.embedders.vggish:convert_pca",
        sample_rate=16000,
        dim=128,
        homepage="https://github.com/harritaylor/torchvggish",
    ),
    # OpenL3 (music, mel256) as ported by torchopenl3; no digest of these files is published: first use.
    "openl3": WeightsBundle(
        name="openl3",
        source="https://github.com/torchopenl3/torchopenl3-models/raw/master/torchopenl3_mel256_music_512.pth.tar",
        file_name="torchopenl3_mel256_music_512.pth.tar",
        digest="sha256:",
        licence="MIT (OpenL3 weights), Apache-2.0 (torchopenl3 port)",
        files=("openl3_mel256_music_512.safetensors",),
        converter="tagstore.embedders.openl3:convert_weights",
        sample_rate=48000,
        dim=512,
        homepage="https://github.com/torchopenl3/torchopenl3",
    ),
    "openl3-6144": WeightsBundle(
        name="openl3-6144",
        source="https://github.com/torchopenl3/torchopenl3-models/raw/master/torchopenl3_mel256_music_6144.pth.tar",
        file_name="torchopenl3_mel256_music_6144.pth.tar",
        digest="sha256:",
        licence="MIT (OpenL3 weights), Apache-2.0 (torchopenl3 port)",
        files=("openl3_mel256_music_6144.safetensors",),
        converter="tagstore.embedders.openl3:convert_weights_6144",
        sample_rate=48000,
        dim=6144,
        homepage="https://github.com/torchopenl3/torchopenl3",
    ),
    # PaSST-S (AudioSet, SWA, mAP .476), the checkpoint hear21passt loads; no digest is published: first use.
    "passt": WeightsBundle(
        name="passt",
        source="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
        file_name="passt-s-f128-p16-s10-ap.476-swa.pt",
        digest="sha256:",
        licence="Apache-2.0",
        files=("passt_s_swa_p16_128_ap476.safetensors",),
        converter="tagstore.embedders.passt:convert_weights",
        sample_rate=32000,
        dim=768,
        homepage="https://github.com/kkoutini/PaSST",
    ),
}
"""Known bundles by name; other backends add theirs here."""


# --- the cache ------------------------------------------------------------------------------------


def bundle_dir(bundle: WeightsBundle, weights_dir: Path | None = None) -> Path:
    """The cache folder of ``bundle`` (it may not exist)."""
    return Path(weights_dir if weights_dir is not None else default_weights_dir()) / bundle.name


file_digest = file_hash
"""``"ALGORITHM:HEX"`` digest of a file (:func:`tagstore.fileio.file_hash`)."""


def read_manifest(bundle: WeightsBundle, weights_dir: Path | None = None) -> dict[str, Any] | None:
    """The installed bundle's manifest, or None when it is not installed (or unreadable)."""
    path = bundle_dir(bundle, weights_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def _missing(bundle: WeightsBundle, where: Path) -> MissingWeightsError:
    return MissingWeightsError(
        f"the {bundle.name} weights are not in {where}; run `{bundle.fetch_command()}` "
        f"(downloads {bundle.source.removeprefix('pypi:')}) or, offline, `{bundle.import_command()}` with a copy of that file",
        bundle=bundle.name,
    )


def weights_file(
    bundle: WeightsBundle, file_name: str, weights_dir: Path | None = None, verify: bool = True
) -> tuple[Path, str]:
    """Path and recorded digest of one installed file; never downloads.

    Raises MissingWeightsError (naming the fetch/import commands) when the bundle or the file is not
    installed, WeightsDigestError when ``verify`` and the file's digest differs from the manifest's.
    """
    folder = bundle_dir(bundle, weights_dir)
    manifest = read_manifest(bundle, weights_dir)
    path = folder / file_name
    if manifest is None or file_name not in manifest["files"] or not path.is_file():
        raise _missing(bundle, folder)
    recorded = str(manifest["files"][file_name])
    if verify:
        actual = file_digest(path, recorded.partition(":")[0] or "sha256")
        if actual != recorded:
            raise WeightsDigestError(
                f"{path} has digest {actual} but {recorded} was recorded when it was installed; "
                f"run `{bundle.fetch_command()}` to reinstall it"
            )
    return path, recorded


# --- obtaining, verifying, installing --------------------------------------------------------------


def is_published(bundle: WeightsBundle) -> bool:
    """Whether the bundle names a published digest (else it is trusted on first use)."""
    return bool(bundle.digest.partition(":")[2])


def digest_matches(expected: str, actual: str) -> bool:
    """Whether full digest ``actual`` is ``expected``: equal, or ``expected``'s HEX is a prefix of 8+ digits."""
    algorithm, _, hexdigest = expected.partition(":")
    actual_algorithm, _, actual_hex = actual.partition(":")
    return algorithm == actual_algorithm and len(hexdigest) >= 8 and actual_hex.startswith(hexdigest.lower())


def pinned_digest(bundle: WeightsBundle, weights_dir: Path | None = None) -> str | None:
    """For a bundle without a published digest, the source digest recorded at its first install (or None)."""
    if is_published(bundle):
        return None
    manifest = read_manifest(bundle, weights_dir)
    pinned = manifest.get("pinned_digest") if manifest else None
    return str(pinned) if pinned else None


def verify_file(bundle: WeightsBundle, path: Path, unverified: bool = False, pinned: str | None = None) -> str:
    """Digest of ``path``; raises WeightsDigestError naming both digests if it is not the bundle's file.

    The expected digest is the published one, else ``pinned`` (recorded at the first install); with
    neither the file is accepted (first use). With ``unverified`` a different digest is accepted (and
    returned) instead.
    """
    actual = file_digest(path, bundle.algorithm)
    expected = bundle.digest if is_published(bundle) else pinned
    if expected and not digest_matches(expected, actual) and not unverified:
        what = "" if is_published(bundle) else " recorded when it was first installed (none is published)"
        raise WeightsDigestError(
            f"{path} is not the {bundle.name} weights file {bundle.file_name}: expected {expected}{what}, "
            f"got {actual}; fetch the right file (`{bundle.fetch_command()}`), or import it with --unverified "
            "if you trust it"
        )
    return actual


def download(bundle: WeightsBundle, dest: Path, progress: Say | None = None) -> Path:
    """Obtain the bundle's source file into folder ``dest`` (pip for ``pypi:``, else urllib); not verified."""
    say = progress or (lambda _msg: None)
    if bundle.source.startswith("pypi:"):
        requirement = bundle.source.removeprefix("pypi:")
        say(f"downloading {requirement} from the package index with pip")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", requirement, "-d", str(dest)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise EmbedderError(
                f"pip could not download {requirement} ({tail}); check the network, or download "
                f"{bundle.file_name} elsewhere and run `{bundle.import_command()}`"
            )
        found = sorted(p for p in dest.iterdir() if p.is_file())
        if not found:
            raise EmbedderError(f"pip reported success but left no file in {dest} for {requirement}")
        return dest / bundle.file_name if (dest / bundle.file_name).is_file() else found[0]
    import urllib.request  # http.client and ssl load only for a download

    target = dest / bundle.file_name
    say(f"downloading {bundle.source}")
    try:
        with urllib.request.urlopen(bundle.source, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)

            def copy(out: Any) -> None:
                size = 0
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    size += len(block)
                    if total:
                        say(f"  {size / 1e6:.1f} / {total / 1e6:.1f} MB")

            atomic_write(target, copy)  # a broken-off download never leaves a partial file
    except OSError as exc:
        raise EmbedderError(
            f"could not download {bundle.source} ({exc}); check the network, or download it elsewhere "
            f"and run `{bundle.import_command()}`"
        ) from exc
    return target


def _convert(bundle: WeightsBundle, source_file: Path, out_dir: Path) -> None:
    if bundle.converter is None:
        shutil.copyfile(source_file, out_dir / bundle.file_name)
        return
    module_name, _, func_name = bundle.converter.partition(":")
    getattr(importlib.import_module(module_name), func_name)(source_file, out_dir)


def install(
    bundle: WeightsBundle,
    source_file: Path,
    weights_dir: Path | None = None,
    unverified: bool = False,
    progress: Say | None = None,
) -> Path:
    """Verify ``source_file``, convert it and atomically (re)place the bundle's cache folder; returns it."""
    say = progress or (lambda _msg: None)
    source_file = Path(source_file)
    if not source_file.is_file():
        raise PathNotFoundError(f"{source_file} does not exist; give the path of {bundle.file_name}")
    say(f"verifying {source_file.name} ({bundle.algorithm})")
    pinned = pinned_digest(bundle, weights_dir)
    source_digest = verify_file(bundle, source_file, unverified, pinned)
    verified = digest_matches(bundle.digest, source_digest) if is_published(bundle) else None
    if verified is None and (pinned is None or digest_matches(pinned, source_digest)):
        trust = "first-use"
        say(f"{bundle.name}: no digest is published; recording {source_digest} (trust on first use)" if pinned is None
            else f"{bundle.name}: {source_digest} matches the digest recorded at its first install")
    elif verified:
        trust = "published"
    else:
        trust = "unverified"
        say(f"WARNING: {source_file} does not match the {bundle.name} digest "
            f"{bundle.digest if verified is not None else pinned}: it has {source_digest}; installing it UNVERIFIED "
            "as asked (--unverified); the manifest records this")
    final = bundle_dir(bundle, weights_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.name}-", dir=final.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is readable like the files in it
    try:
        say(f"converting {source_file.name} into {final}")
        _convert(bundle, source_file, staging)
        files = {}
        for name in bundle.files:
            path = staging / name
            if not path.is_file():
                raise EmbedderError(f"converting {source_file} for {bundle.name} did not produce {name}")
            os.chmod(path, 0o644)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            files[name] = file_digest(path)
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": bundle.name,
            "source": bundle.source,
            "source_file": source_file.name,
            "source_digest": source_digest,
            "verified": bool(verified),
            "trust": trust,
            "pinned_digest": pinned or (source_digest if trust == "first-use" else None),
            "licence": bundle.licence,
            "converter": bundle.converter,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2))
        old = None
        if final.exists():
            old = final.parent / f".{bundle.name}-old-{os.getpid()}-{time.monotonic_ns()}"
            final.rename(old)
        staging.rename(final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def fetch(bundle: WeightsBundle, weights_dir: Path | None = None, progress: Say | None = None) -> Path:
    """Download the bundle's source file, verify its digest, convert and install it; returns the cache folder."""
    with tempfile.TemporaryDirectory(prefix=f"tagstore-{bundle.name}-") as tmp:
        source_file = download(bundle, Path(tmp), progress)
        return install(bundle, source_file, weights_dir, unverified=False, progress=progress)
