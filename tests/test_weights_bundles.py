"""The VGGish, OpenL3 and PaSST weights bundles, and the three together (the paper's Combined embedding).

Digests: published full or prefix digests (torch.hub's 8-hex file-name convention), trust on first use
where none is published, ``--unverified``; the offline error; `tagstore models list`. Combined: one
TrackEmbedder over the three backends (seeded weights from test_vggish/test_openl3/test_passt) on stereo
files at 8, 44.1 and 48 kHz, and a 10-minute file streamed in chunks with bounded memory.
"""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagstore.embedders import pretrained, weights
from tagstore.errors import EmbedderError, MissingWeightsError, WeightsDigestError
from tagstore.embedders.weights import WeightsBundle

from conftest import cli

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


def toy(tmp_path: Path, content: bytes, digest: str) -> WeightsBundle:
    src = tmp_path / "published.pt"
    src.write_bytes(content)
    return WeightsBundle(name="toy", source=src.as_uri(), file_name="published.pt", digest=digest,
                         licence="MIT", files=("published.pt",))


def manifest(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "manifest.json").read_text())


# --- digests ---------------------------------------------------------------------------------------


def test_bundles_name_their_sources_and_digests() -> None:
    b = weights.BUNDLES
    assert b["vggish"].digest == "sha256:10086976" and b["vggish"].file_name == "vggish-10086976.pth"
    assert b["vggish-pca"].digest == "sha256:970ea276" and b["vggish-pca"].source.endswith("/" + b["vggish-pca"].file_name)
    for name in ("openl3", "openl3-6144", "passt"):  # no digest published: trust on first use
        assert not weights.is_published(b[name]) and b[name].source.endswith("/" + b[name].file_name)
    assert {n: (b[n].dim, b[n].sample_rate) for n in ("vggish", "openl3", "openl3-6144", "passt")} == {
        "vggish": (128, 16000), "openl3": (512, 48000), "openl3-6144": (6144, 48000), "passt": (768, 32000)}


def test_digest_prefixes() -> None:
    full = "sha256:10086976" + "ab" * 28
    assert weights.digest_matches("sha256:10086976", full) and weights.digest_matches(full, full)
    assert not weights.digest_matches("sha256:10086977", full)
    assert not weights.digest_matches("sha256:1008", full)  # too short to mean anything
    assert not weights.digest_matches("sha1:10086976", full) and not weights.digest_matches("sha256:", full)


def test_prefix_digest_good_and_bad(tmp_path: Path) -> None:
    src = tmp_path / "vggish-xxxxxxxx.pth"
    src.write_bytes(b"some weights")
    actual = weights.file_digest(src)
    good = toy(tmp_path, b"some weights", "sha256:" + actual[7:15])
    folder = weights.fetch(good, tmp_path / "cache")
    assert manifest(folder)["verified"] is True and manifest(folder)["trust"] == "published"
    bad = toy(tmp_path, b"other weights", "sha256:" + actual[7:15])
    with pytest.raises(WeightsDigestError) as err:
        weights.fetch(bad, tmp_path / "cache2")
    assert "sha256:" + actual[7:15] in str(err.value) and weights.file_digest(tmp_path / "published.pt") in str(err.value)


def test_trust_on_first_use(tmp_path: Path) -> None:
    bundle = toy(tmp_path, b"passt v1", "sha256:")
    messages: list[str] = []
    folder = weights.fetch(bundle, tmp_path / "cache", progress=messages.append)
    first = manifest(folder)
    assert first["trust"] == "first-use" and first["verified"] is False
    assert first["pinned_digest"] == first["source_digest"] == weights.file_digest(tmp_path / "published.pt")
    assert any("trust on first use" in m for m in messages)
    weights.fetch(bundle, tmp_path / "cache")  # the same file again: matches the pin
    (tmp_path / "published.pt").write_bytes(b"passt v2, changed upstream")
    with pytest.raises(WeightsDigestError, match="recorded when it was first installed"):
        weights.fetch(bundle, tmp_path / "cache")
    again = weights.install(bundle, tmp_path / "published.pt", tmp_path / "cache", unverified=True)
    assert manifest(again)["trust"] == "unverified" and manifest(again)["pinned_digest"] == first["pinned_digest"]


def test_cli_import_unverified_is_loud_and_recorded(runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "cache"))
    pca = tmp_path / "vggish_pca_params-970ea276.pth"
    rng = np.random.default_rng(0)
    torch.save({"pca_eigen_vectors": rng.standard_normal((128, 128)), "pca_means": rng.standard_normal(128)}, pca)
    refused = cli(runner, "models", "import", "vggish-pca", pca)
    assert refused.exit_code == 1 and "sha256:970ea276" in refused.stderr and "--unverified" in refused.stderr
    done = cli(runner, "models", "import", "vggish-pca", pca, "--unverified")
    assert done.exit_code == 0, done.stderr
    assert "WARNING" in done.stderr and "UNVERIFIED" in done.stderr and "sha256:970ea276" in done.stderr
    record = manifest(tmp_path / "cache" / "vggish-pca")
    assert record["verified"] is False and record["trust"] == "unverified"
    assert record["source_digest"] == weights.file_digest(pca)
    listed = {m["name"]: m for m in json.loads(cli(runner, "models", "list", "--json").stdout)}
    assert listed["vggish-pca"]["present"] and listed["vggish-pca"]["verified"] is False
    assert not listed["passt"]["present"] and listed["passt"]["dim"] == 768 and listed["openl3"]["sample_rate"] == 48000


def test_converters_refuse_other_files(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    junk = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EmbedderError, match="not a readable PyTorch checkpoint"):
        pretrained.import_file("passt", junk, unverified=True, weights_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "passt").exists()


# --- without weights, without network ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["vggish", "openl3", "passt"])
def test_offline_error_names_url_file_and_import(name: str, tmp_path: Path) -> None:
    from tagstore.embedders import create

    bundle = weights.BUNDLES[name]
    with pytest.raises(MissingWeightsError) as err:
        create(name, {"weights_dir": str(tmp_path)})
    text = str(err.value)
    assert bundle.source in text and f"tagstore models import {name} {bundle.file_name}" in text
    assert f"tagstore models fetch {name}" in text and "Traceback" not in text


def test_pca_needs_its_own_bundle(tmp_path: Path) -> None:
    from tagstore.embedders import create

    root = _vggish_root(tmp_path.parent)
    only = tmp_path / "only-vggish"
    only.mkdir()
    (only / "vggish").symlink_to(root / "vggish")
    with pytest.raises(MissingWeightsError, match="tagstore models fetch vggish-pca"):
        create("vggish", {"weights_dir": str(only), "pca": "true"})


def test_fetch_without_network_says_how_to_import(tmp_path: Path) -> None:
    offline = dataclasses.replace(weights.BUNDLES["passt"], source="http://127.0.0.1:9/passt-s-f128-p16-s10-ap.476-swa.pt")
    with pytest.raises(EmbedderError, match="tagstore models import passt passt-s-f128-p16-s10-ap.476-swa.pt"):
        weights.fetch(offline, tmp_path / "cache")


# --- the three together ---------------------------------------------------------------------------


def _vggish_root(base: Path) -> Path:
    test_vggish = pytest.importorskip("test_vggish")
    if (reason := test_vggish._reference_missing()) is not None:
        pytest.skip(reason)
    return test_vggish.vggish_weights(base / "vggish")  # the seeded weights are shared per run under basetemp


@pytest.fixture(scope="module")
def combined_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One weights folder with the seeded VGGish, OpenL3 and PaSST installed; $TAGSTORE_WEIGHTS_DIR points to it."""
    import importlib

    base = tmp_path_factory.getbasetemp()
    vggish = _vggish_root(base)
    roots = {"vggish": vggish, "vggish-pca": vggish}
    for mod, helper, names in (("test_openl3", "openl3_weights", ("openl3",)), ("test_passt", "passt_weights", ("passt",))):
        module = importlib.import_module(mod)
        if (reason := module._reference_missing()) is not None:
            pytest.skip(reason)
        root = getattr(module, helper)(base / mod.removeprefix("test_"))
        roots.update({n: root for n in names})
    folder = tmp_path_factory.mktemp("combined")
    for name in ("vggish", "vggish-pca", "openl3", "passt"):
        (folder / name).symlink_to(roots[name] / name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(weights.WEIGHTS_ENV, str(folder))
        yield folder


SPEC = "vggish:threads=1:device=cpu,openl3:threads=1:device=cpu,passt:threads=1:device=cpu"


@pytest.fixture(scope="module")
def combined(combined_dir: Path):  # type: ignore[no-untyped-def]
    from tagstore.embedders.host import TrackEmbedder

    return TrackEmbedder.from_spec(SPEC)


def test_init_takes_the_names_models_list_shows(combined_dir: Path, runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``vggish-pca`` and ``openl3-6144`` (bundle names in `models list`) are embedder names for init."""
    from tagstore.embedders import create, parse_spec

    result = cli(runner, "init", tmp_path / "s", "--embedders", "vggish-pca:threads=1")
    assert result.exit_code == 0, result.output
    from tagstore.store import Store

    store = Store.open(tmp_path / "s")
    block = store.layout.blocks[0]
    assert (block.name, block.options, block.dim) == ("vggish", {"pca": True}, 128)
    store.close()
    with pytest.raises(MissingWeightsError, match="tagstore models fetch openl3-6144"):
        create(*parse_spec("openl3-6144"))  # the alias reaches the 6144-d bundle (not installed here)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_combined_on_stereo_files_at_any_rate(rate: int, combined, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    t = np.arange(int(1.5 * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
    right = 0.3 * np.sign(np.sin(2 * np.pi * 110 * t)) * np.exp(-((t % 0.5) * 8))
    stereo = np.stack([left, right], 1).astype(np.float32)
    path = tmp_path / f"clip_{rate}.wav"
    sf.write(str(path), stereo, rate, subtype="FLOAT")
    te = combined
    assert [b.name for b in te.layout.blocks] == ["vggish", "openl3", "passt"]
    assert [b.dim for b in te.layout.blocks] == [128, 512, 768] and te.layout.dim == 1408
    got = te.embed_file(path)
    assert got.vector.shape == (1408,) and np.all(np.isfinite(got.vector)) and abs(got.duration_s - 1.5) < 1e-3
    # The host downmixes and resamples in chunks; the same audio in memory gives the same vector.
    direct = te.embed_audio(stereo.mean(1), rate).vector
    for block, (a, b) in zip(te.layout.blocks, ((0, 128), (128, 640), (640, 1408))):
        diff = np.linalg.norm(got.vector[a:b] - direct[a:b]) / np.linalg.norm(direct[a:b])
        assert diff < 1e-3, (block.name, diff)


def test_ten_minutes_stream_in_bounded_memory(combined_dir: Path, tmp_path: Path) -> None:
    """A 10-minute file at 8 kHz (9.6 MB) through all three: every window embedded once, memory bounded.

    The networks are replaced by cheap stand-ins (their cost is not what is tested); the host's decoding,
    resampling to 16, 48 and 32 kHz, windowing and batching, the backends' input checks and pooling run.
    Peak traced memory on 10 minutes is that of 2 minutes: it does not grow with the file.
    """
    from tagstore.embedders.host import TrackEmbedder

    rate = 8000
    te = TrackEmbedder.from_spec(SPEC)
    batches: dict[str, list[int]] = {}
    for e in te.embedders:
        def stand_in(windows: np.ndarray, e=e) -> tuple[np.ndarray, None]:  # type: ignore[no-untyped-def]
            windows = e.check_windows(windows)
            batches.setdefault(e.name, []).append(windows.shape[0])
            return np.repeat(windows[:, :1], e.dim, axis=1), None
        e.embed_tags = stand_in  # type: ignore[method-assign]
    peaks = {}
    for seconds in (120, 600):
        t = np.arange(rate * seconds) / rate
        path = tmp_path / f"long_{seconds}.wav"
        sf.write(str(path), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
        del t
        batches.clear()
        tracemalloc.start()
        got = te.embed_file(path)
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert abs(got.duration_s - seconds) < 1e-3 and got.vector.shape == (1408,)
        for e in te.embedders:
            n = seconds * e.sample_rate
            expected = (n - e.window_samples) // e.hop_samples + 1
            assert abs(sum(batches[e.name]) - expected) <= 1, e.name
            assert max(batches[e.name]) <= e.batch_size
    assert sum(batches["openl3"]) >= 599 and sum(batches["passt"]) >= 118 and sum(batches["vggish"]) >= 624
    # 10 minutes would be 19 MB as float32 at 8 kHz and 115 MB at OpenL3's 48 kHz.
    assert peaks[600] < 1.2 * peaks[120] and peaks[600] < 40e6, peaks
