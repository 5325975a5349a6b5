"""musicnn backend: contract, log-mel input, and the optimised network against a plain numpy reference.

The weights are seeded random tensors of the real shapes, installed from a fake wheel (TF V2 checkpoints
written by the test writer), so nothing here needs the network or the real weights; the real weights are
used in addition when they are in the cache. Equivalence with the original TensorFlow package is checked
by benchmarks/musicnn_equivalence.py.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tagstore.embedders.musicnn import BN_EPS, N_FRAMES, PARAM_SHAPES, mel_filterbank
from tagstore.errors import EmbedderError

from test_tfcheckpoint import write_checkpoint

WINDOW = 48128


def random_params(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded tensors of the checkpoint's shapes; some BN scales negative (exercises the min/max flip)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in PARAM_SHAPES.items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            arr = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif leaf == "gamma":
            arr = rng.uniform(0.5, 1.5, shape) * np.where(rng.random(shape) < 0.2, -1, 1)
        elif leaf == "moving_variance":
            arr = rng.uniform(0.5, 1.5, shape)
        else:
            arr = 0.1 * rng.standard_normal(shape)
        out[name] = arr.astype(np.float32)
    return out


def fake_wheel(path: Path, seed: int = 0) -> Path:
    """A zip laid out like the musicnn 0.1.0 wheel, its two checkpoints holding :func:`random_params`."""
    tmp = path.parent / f".ckpt-{seed}"
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i, model in enumerate(("MSD_musicnn", "MTT_musicnn")):
            params = random_params(seed + i)
            params[f"{model}_Adam_slot/Adam"] = np.zeros(3, np.float32)  # extra variables are ignored
            write_checkpoint(tmp / model, params)
            zf.write(tmp / f"{model}.index", f"musicnn/{model}/.index")
            zf.write(tmp / f"{model}.data-00000-of-00001", f"musicnn/{model}/.data-00000-of-00001")
    return path


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tagstore.embedders import pretrained

    root = tmp_path_factory.mktemp("musicnn")
    pretrained.import_file("musicnn", fake_wheel(root / "fake.whl"), unverified=True, weights_dir=root / "weights")
    return root / "weights"


@pytest.fixture(scope="module")
def torch():  # type: ignore[no-untyped-def]
    return pytest.importorskip("torch", reason="the musicnn backend needs torch (pip install 'tagstore[torch]')")


@pytest.fixture(scope="module")
def emb(weights_dir: Path, torch):  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    return create("musicnn", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})


def clips(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 48128)`` music-like float32 windows: harmonic notes, a beat and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / 16000
    out = []
    for _ in range(n):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
        x += (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0.95) * rng.standard_normal(WINDOW)
        out.append(0.1 * x + 0.01 * rng.standard_normal(WINDOW))
    return np.asarray(out, dtype=np.float32)


# --- a plain numpy musicnn (direct convolutions, TF names, float64) -----------------------------------


def reference(p: dict[str, np.ndarray], logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from numpy.lib.stride_tricks import sliding_window_view as windows

    p = {k: v.astype(np.float64) for k, v in p.items()}

    def bn(x: np.ndarray, i: int) -> np.ndarray:
        q = f"batch_normalization{'_' + str(i) if i else ''}/"
        return (x - p[q + "moving_mean"]) / np.sqrt(p[q + "moving_variance"] + BN_EPS) * p[q + "gamma"] + p[q + "beta"]

    def conv(i: int) -> tuple[np.ndarray, np.ndarray]:
        q = f"conv2d{'_' + str(i) if i else ''}/"
        return p[q + "kernel"][:, :, 0, :], p[q + "bias"]

    x = bn(logmel.astype(np.float64)[..., None], 0)[..., 0]  # (n, 187, 96)
    xp = np.pad(x, ((0, 0), (3, 3), (0, 0)))
    front = []
    for i in (0, 1):
        k, b = conv(i)  # (7, F, 204)
        z = np.einsum("ntfab,abo->ntfo", windows(xp, k.shape[:2], axis=(1, 2)), k, optimize=True) + b
        front.append(bn(np.maximum(z, 0), i + 1).max(axis=2))
    for i in (2, 3, 4):
        k, b = conv(i)  # (taps, 1, 51)
        n = k.shape[0]
        xt = np.pad(x, ((0, 0), ((n - 1) // 2, n - 1 - (n - 1) // 2), (0, 0)))
        z = np.einsum("ntfe,eo->ntfo", windows(xt, n, axis=1), k[:, 0], optimize=True) + b
        front.append(bn(np.maximum(z, 0), i + 1).max(axis=2))
    layers, prev = [np.concatenate(front, -1)], None  # (n, 187, 561)
    for i in (5, 6, 7):
        k, b = conv(i)  # (7, C, 64)
        win = windows(np.pad(layers[-1], ((0, 0), (3, 3), (0, 0))), 7, axis=1)  # (n, 187, C, 7)
        y = bn(np.maximum(np.einsum("ntce,eco->nto", win, k, optimize=True) + b, 0), i + 1)
        prev = y if prev is None else y + prev
        layers.append(prev)
    mid = np.concatenate(layers, -1)  # (n, 187, 753)
    flat = np.stack([mid.max(1), mid.mean(1)], -1).reshape(len(mid), -1)
    pen = bn(np.maximum(bn(flat, 9) @ p["dense/kernel"] + p["dense/bias"], 0), 10)
    return mid.max(1), pen, 1 / (1 + np.exp(-(pen @ p["dense_1/kernel"] + p["dense_1/bias"]))), mid.mean(1)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


# --- tests -----------------------------------------------------------------------------------------


def test_import_does_not_load_torch() -> None:
    code = "import sys, tagstore.embedders, tagstore.embedders.musicnn, tagstore.embedders.pretrained; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_contract(emb) -> None:  # type: ignore[no-untyped-def]
    assert (emb.sample_rate, emb.window_samples, emb.hop_samples, emb.dim) == (16000, WINDOW, 47872, 753)
    assert emb.hop_samples == N_FRAMES * 256 and emb.lead_in_samples == 256 and emb.licence == "ISC" and len(emb.tag_names) == 50
    assert emb.tag_names[0] == "rock" and emb.options == {"model": "MSD", "layer": "max_pool"}
    assert emb.version.startswith("1:sha256:") and len(emb.version) == 2 + 7 + 16
    e, tags = emb.embed_tags(clips(3))
    assert e.shape == (3, 753) and e.dtype == np.float32 and tags.shape == (3, 50) and tags.dtype == np.float32
    assert np.all(np.isfinite(e)) and np.all((tags >= 0) & (tags <= 1))
    np.testing.assert_array_equal(emb.embed(clips(3)), e)  # deterministic, and embed == embed_tags[0]
    assert emb.pool(e).shape == (753,)
    with pytest.raises(ValueError, match="48128"):
        emb.embed(np.zeros((2, 48000), np.float32))
    assert emb.embed(np.zeros((0, WINDOW), np.float32)).shape == (0, 753)


def test_batch_equals_single(emb, weights_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    w = clips(5, seed=1)
    batch = emb.embed(w)
    single = np.concatenate([emb.embed(w[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)
    two_workers = create("musicnn", {"weights_dir": str(weights_dir), "threads": "2"})
    np.testing.assert_allclose(two_workers.embed(w), batch, rtol=1e-5, atol=1e-5)


def test_short_clips_are_padded_by_repetition(emb) -> None:  # type: ignore[no-untyped-def]
    one_second = clips(1)[0, :16000]
    padded = emb.pad_short(one_second)
    assert padded.shape == (WINDOW,)
    np.testing.assert_array_equal(padded[16000:32000], one_second)


def test_matches_numpy_reference(emb) -> None:  # type: ignore[no-untyped-def]
    """The optimised paths (DFT timbral convs, Toeplitz temporal convs, folded BN) against direct numpy."""
    logmel = emb.logmel(clips(2, seed=2))
    max_pool, pen, tags, mean_pool = reference(random_params(0), logmel)  # the fake wheel's MSD checkpoint has seed 0
    for use_dft in (True, False):
        emb._net.use_dft = use_dft
        try:
            out = emb.outputs(logmel=logmel)
        finally:
            emb._net.use_dft = emb.device.type == "cpu"
        assert rel(out["max_pool"], max_pool) < 1e-5 and rel(out["mean_pool"], mean_pool) < 1e-5
        assert rel(out["penultimate"], pen) < 1e-5
        assert rel(out["tags"], tags) < 1e-5


def test_options_from_spec_strings(weights_dir: Path, torch) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create, parse_spec

    name, opts = parse_spec("musicnn:model=MTT:layer=penultimate")
    emb = create(name, {**opts, "weights_dir": str(weights_dir), "threads": "1"})
    assert emb.dim == 200 and emb.tag_names[0] == "guitar" and emb.options == {"model": "MTT", "layer": "penultimate"}
    e, tags = emb.embed_tags(clips(2))
    assert e.shape == (2, 200) and tags.shape == (2, 50)
    bad_options = [({"model": "XYZ"}, "MSD or MTT"), ({"layer": "cnn3"}, "max_pool, mean_pool, penultimate, taggram"),
                   ({"pool": "median"}, "mean, mean\\+max, mean\\+std"), ({"device": "tpu"}, "cpu"),
                   ({"threads": "many"}, "whole number"), ({"threads": "0"}, "at least 1")]
    if not torch.cuda.is_available():
        bad_options.append(({"device": "cuda"}, "no CUDA device"))
    for bad, match in bad_options:
        with pytest.raises(EmbedderError, match=match):
            create("musicnn", {**bad, "weights_dir": str(weights_dir)})


@pytest.mark.parametrize("model", ["MSD", "MTT"])
def test_layers_and_pooling_options(weights_dir: Path, torch, model: str) -> None:  # type: ignore[no-untyped-def]
    """Every layer of both models against the numpy reference; each pooling over a track's windows."""
    from tagstore.embedders import create, parse_spec
    from tagstore.embedders.host import TrackEmbedder
    from tagstore.layout import Block

    def build(spec: str):  # type: ignore[no-untyped-def]
        name, opts = parse_spec(spec)
        return create(name, opts, {"weights_dir": str(weights_dir), "threads": 1})

    w = clips(3, seed=4)
    seed = 0 if model == "MSD" else 1  # the fake wheel's checkpoints
    base = create("musicnn", {"model": model, "weights_dir": str(weights_dir), "threads": "1"})
    max_pool, pen, tags, mean_pool = reference(random_params(seed), base.logmel(w))
    expected = {"max_pool": max_pool, "mean_pool": mean_pool, "penultimate": pen, "taggram": tags}
    for layer, size in [("max_pool", 753), ("mean_pool", 753), ("penultimate", 200), ("taggram", 50)]:
        spec = f"musicnn:model={model}:layer={layer}"
        emb = build(spec)
        assert (emb.dim, emb.window_dim, emb.options) == (size, size, {"model": model, "layer": layer})
        e, t = emb.embed_tags(w)
        assert e.shape == (3, size) and rel(e, expected[layer]) < 1e-5 and rel(t, tags) < 1e-5
    track = np.tile(clips(1, seed=6)[0], 4)  # 4 x 3.008 s: several windows
    host_mean = TrackEmbedder([build(f"musicnn:model={model}:layer=penultimate")])
    windows_pen = host_mean.embedders[0].embed(_track_windows(host_mean.embedders[0], track))
    for pool, second in [("mean+max", windows_pen.max(0)), ("mean+std", windows_pen.std(0))]:
        emb = build(f"musicnn:model={model}:layer=penultimate:pool={pool}")
        assert (emb.dim, emb.window_dim) == (400, 200) and emb.options["pool"] == pool
        block = Block(**emb.describe())
        assert block.spec == f"musicnn:layer=penultimate:model={model}:pool={pool}" and block.dim == 400
        assert build(block.spec).describe() == emb.describe()  # the layout rebuilds it
        vector = TrackEmbedder([emb]).embed_audio(track, 16000).vector
        np.testing.assert_allclose(vector, np.concatenate([windows_pen.mean(0), second]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(host_mean.embed_audio(track, 16000).vector, windows_pen.mean(0), rtol=1e-4, atol=1e-5)


def _track_windows(emb, track: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.concatenate([np.zeros(emb.lead_in_samples, np.float32), track])
    return np.ascontiguousarray(sliding_window_view(padded, emb.window_samples)[:: emb.hop_samples])


def test_windows_after_lead_in_are_the_original_patches(emb) -> None:  # type: ignore[no-untyped-def]
    """256 zeros, then windows of 48128 every 47872: the original's whole-track frames, 187 at a time."""
    from numpy.lib.stride_tricks import sliding_window_view

    track = 0.2 * np.tile(clips(1, seed=3)[0], 3)[: 3 * 47872 + 5000]  # quiet: the float16 path stays finite
    padded = np.concatenate([np.zeros(emb.lead_in_samples, np.float32), track])
    wins = sliding_window_view(padded, emb.window_samples)[:: emb.hop_samples]
    assert wins.shape[0] == 3
    # the original: librosa-style centred STFT of the whole track (zero padding), patches of 187 frames
    frames = sliding_window_view(np.pad(track.astype(np.float64), 256), 512)[::256]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    power = np.abs(np.fft.rfft(frames * hann, axis=-1).astype(np.complex64)) ** 2
    mel = np.log10(10000 * (power @ mel_filterbank().T).astype(np.float16) + 1)  # float16, as the original
    patches = mel[: 3 * N_FRAMES].reshape(3, N_FRAMES, 96).astype(np.float32)
    got = emb.logmel(np.ascontiguousarray(wins))
    assert np.abs(got - patches).max() <= 4e-3  # a float16 step where float32 sums round the other way
    assert np.mean(got != patches) < 1e-3


def test_mel_filterbank_is_librosas() -> None:
    fb = mel_filterbank()  # values from librosa.filters.mel(sr=16000, n_fft=512, n_mels=96), librosa 0.11
    assert fb.shape == (96, 257) and fb.dtype == np.float32
    assert fb.sum() == pytest.approx(3.071913957595825, rel=1e-6)
    assert list(fb.argmax(1)[[0, 10, 50, 95]]) == [1, 11, 59, 248]
    assert fb[10].max() == pytest.approx(0.030413499101996422, rel=1e-6)
    assert fb[95].max() == pytest.approx(0.0039845602586865425, rel=1e-6)


def test_logmel_rounds_like_the_original_without_overflow(emb, torch) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders.musicnn import _round_half

    rng = np.random.default_rng(0)
    x = (rng.random(200_000) * 10.0 ** rng.uniform(-10, 4.8, 200_000)).astype(np.float32)
    np.testing.assert_array_equal(_round_half(torch.from_numpy(x)).numpy(), x.astype(np.float16).astype(np.float32))
    w = clips(2)
    plain = emb.logmel(w, original_rounding=False)
    rounded = emb.logmel(w)
    assert plain.shape == (2, N_FRAMES, 96) and np.abs(rounded - plain).max() < 4e-3
    np.testing.assert_array_equal(rounded, rounded.astype(np.float16).astype(np.float32))
    loud = np.sign(np.sin(2 * np.pi * 220 * np.arange(WINDOW) / 16000)).astype(np.float32)[None]  # full-scale square
    assert np.all(np.isfinite(emb.logmel(loud))) and np.all(np.isfinite(emb.embed(loud)))


def test_real_weights_when_cached(torch) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import weights
    from tagstore.errors import MissingWeightsError

    try:
        weights.weights_file(weights.BUNDLES["musicnn"], "MSD_musicnn.safetensors")
    except MissingWeightsError:
        pytest.skip("musicnn weights not in the cache (tagstore models fetch musicnn)")
    from tagstore.embedders import create

    emb = create("musicnn", {"threads": "1"})
    assert emb.version == "1:sha256:77a4b6ea15894a48"  # converted from the verified wheel
    out = emb.outputs(clips(2))
    emb._net.use_dft = False
    direct = emb.outputs(clips(2))
    assert rel(out["max_pool"], direct["max_pool"]) < 1e-5 and rel(out["tags"], direct["tags"]) < 1e-5
