"""VGGish backend: equals torchvggish's forward (and its PCA postprocessing) on the same weights file.

The weights are seeded random tensors in torchvggish's own architecture (``torchvggish.torchvggish._vgg``),
saved as a .pth like the published ``vggish-10086976.pth`` and installed with ``tagstore.pretrained.import_file``
(unverified: the digest is not the published one). The reference is torchvggish 0.2 (a test-only
dependency): its ``waveform_to_examples`` + ``VGG.forward`` and ``Postprocessor.postprocess``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

from tagstore.embedders.vggish import PATCH_HOP, PATCH_SAMPLES, PCA_SHAPES

pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")  # resampy, via torchvggish

SR = 16000


def _reference_missing() -> str | None:
    try:
        import torch  # noqa: F401
        import torchvggish  # noqa: F401
    except ImportError as exc:
        return f"the VGGish reference needs torch and torchvggish (pip install torchvggish==0.2): {exc}"
    return None


def he_init(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Re-draw torch's default init (seeded) and scale it to He's (keeps activations ~1 through the ReLUs)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.reset_parameters()  # uniform, std 1 / sqrt(3 fan_in)
                module.weight.mul_(6.0**0.5)


@functools.lru_cache(maxsize=None)
def vggish_weights(root: Path) -> Path:
    """A weights cache under ``root`` with seeded VGGish weights and PCA parameters installed (once per run)."""
    import torch
    from torchvggish.torchvggish import _vgg

    from tagstore.embedders import pretrained

    root.mkdir(parents=True, exist_ok=True)
    model = _vgg()
    he_init(model, 0)
    torch.save(model.state_dict(), root / "vggish-10086976.pth")
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    pca = {"pca_eigen_vectors": q / 2.0, "pca_means": 0.2 * rng.standard_normal(128)}  # numpy, like the original
    torch.save(pca, root / "vggish_pca_params-970ea276.pth")
    for name, file in (("vggish", "vggish-10086976.pth"), ("vggish-pca", "vggish_pca_params-970ea276.pth")):
        pretrained.import_file(name, root / file, unverified=True, weights_dir=root / "weights")
    return root / "weights"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (reason := _reference_missing()) is not None:
        pytest.skip(reason)
    return vggish_weights(tmp_path_factory.getbasetemp() / "vggish")


@pytest.fixture(scope="module")
def emb(weights_dir: Path):  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    return create("vggish", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})


@pytest.fixture(scope="module")
def reference(weights_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from torchvggish.torchvggish import Postprocessor, _vgg

    root = weights_dir.parent
    model = _vgg()
    model.load_state_dict(torch.load(root / "vggish-10086976.pth"))
    pproc = Postprocessor.__new__(Postprocessor)  # its __init__ downloads the published parameters
    params = torch.load(root / "vggish_pca_params-970ea276.pth", weights_only=False)
    pproc._pca_matrix = torch.as_tensor(params["pca_eigen_vectors"]).float()
    pproc._pca_means = torch.as_tensor(params["pca_means"].reshape(-1, 1)).float()
    return model.eval(), pproc


def music(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    return conftest.music(seconds, seed, sr, harmonics=5, tremolo_hz=2)


def windows_of(audio: np.ndarray) -> np.ndarray:
    m = (audio.shape[0] - PATCH_SAMPLES) // PATCH_HOP + 1
    return np.stack([audio[i * PATCH_HOP : i * PATCH_HOP + PATCH_SAMPLES] for i in range(m)])


def test_import_does_not_load_torch() -> None:
    code = "import sys, tagstore.embedders, tagstore.embedders.vggish; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_equals_torchvggish(emb, reference) -> None:  # type: ignore[no-untyped-def]
    import torch
    from torchvggish.vggish_input import waveform_to_examples

    model, _ = reference
    audio = music(3.5)
    examples = waveform_to_examples(audio.astype(np.float64), SR)  # (3, 1, 96, 64)
    with torch.no_grad():
        ref = model(examples).numpy()
    windows = windows_of(audio)
    assert windows.shape == (3, PATCH_SAMPLES) and ref.shape == (3, 128) and np.abs(ref).max() > 0.1
    np.testing.assert_allclose(emb.logmel(windows), examples[:, 0].detach().numpy(), rtol=1e-5, atol=1e-5)
    ours = emb.embed(windows)
    assert ours.dtype == np.float32 and ours.shape == (3, 128)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    from tagstore.embedders.host import TrackEmbedder

    track = TrackEmbedder([emb]).embed_audio(audio, SR)  # the host cuts exactly torchvggish's patches
    np.testing.assert_allclose(track.vector, ref.mean(0), rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_pca_equals_torchvggish_postprocessor(weights_dir: Path, emb, reference) -> None:  # type: ignore[no-untyped-def]
    import torch

    from tagstore.embedders import create

    _, pproc = reference
    pca = create("vggish", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1", "pca": "true"})
    assert pca.options == {"pca": True} and pca.version != emb.version and pca.dim == 128
    windows = windows_of(music(3.5, seed=3))
    ref = pproc.postprocess(torch.from_numpy(emb.embed(windows))).numpy()
    ours = pca.embed(windows)
    assert set(np.unique(ours)) <= set(np.arange(256.0)) and ours.std() > 1
    # Quantisation may round a value that sits on a step boundary the other way: at most by one step.
    assert np.abs(ours - ref).max() <= 1 and np.mean(ours != ref) < 0.01


def test_batch_equals_single_and_contract(emb) -> None:  # type: ignore[no-untyped-def]
    windows = windows_of(music(4.0, seed=5))
    batch = emb.embed(windows)
    single = np.concatenate([emb.embed(w[None]) for w in windows])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-5 * np.abs(batch).max())
    assert emb.embed(np.zeros((0, PATCH_SAMPLES), np.float32)).shape == (0, 128)
    assert (emb.sample_rate, emb.window_samples, emb.hop_samples) == (16000, 15600, 15360)
    with pytest.raises(ValueError, match="15600"):
        emb.embed(np.zeros((2, 16000), np.float32))
    assert emb.describe()["options"] == {"pca": False} and emb.version.startswith("1:sha256:")


def test_options(weights_dir: Path) -> None:
    from tagstore.embedders import create
    from tagstore.errors import EmbedderError

    with pytest.raises(EmbedderError, match="pca must be true or false"):
        create("vggish", {"weights_dir": str(weights_dir), "pca": "maybe"})
    with pytest.raises(EmbedderError, match="unknown device"):
        create("vggish", {"weights_dir": str(weights_dir), "device": "tpu"})
    assert create("vggish", {"weights_dir": str(weights_dir), "device": "cpu", "batch_size": "3"}).batch_size == 3


def test_pca_params_shapes_are_the_published_ones() -> None:
    assert PCA_SHAPES == {"pca_eigen_vectors": (128, 128), "pca_means": (128, 1)}
