"""OpenL3 backend: equals torchopenl3's ``get_audio_embedding`` on the same weights file (512 and 6144).

The weights are torchopenl3's own ``PytorchOpenl3("music", "mel256", 512)`` with seeded random
convolutions and batch-norm statistics (its DFT and mel kernels as the package computes them), saved as a
state dict like the published ``torchopenl3_mel256_music_512.pth.tar`` and installed unverified. The
reference is torchopenl3 1.0.1 (a test-only dependency), called with ``center=False`` and our hop.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

pytestmark = [pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
              pytest.mark.filterwarnings("ignore:Empty filters detected")]  # librosa, in torchopenl3's mel basis

SR = 48000


def _reference_missing() -> str | None:
    try:
        import torch  # noqa: F401
        import torchopenl3  # noqa: F401
    except ImportError as exc:
        return f"the OpenL3 reference needs torch and torchopenl3 (pip install torchopenl3==1.0.1): {exc}"
    return None


def reference_model(size: int = 512, seed: int = 0):  # type: ignore[no-untyped-def]
    """torchopenl3's network with seeded random weights and batch-norm statistics (eval mode)."""
    import torch
    from torchopenl3.models import PytorchOpenl3

    torch.manual_seed(seed)
    model = PytorchOpenl3(content_type="music", input_repr="mel256", embedding_size=size)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(6.0**0.5)  # He scale: activations stay ~1 through the ReLUs
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model.eval()


@functools.lru_cache(maxsize=None)
def openl3_weights(root: Path) -> Path:
    """A weights cache under ``root`` with the seeded weights installed as both bundles (once per run)."""
    import torch

    from tagstore.embedders import pretrained

    root.mkdir(parents=True, exist_ok=True)
    state = reference_model().state_dict()
    for name, size in (("openl3", 512), ("openl3-6144", 6144)):
        path = root / f"torchopenl3_mel256_music_{size}.pth.tar"
        torch.save(state, path)  # the two published files differ only in name; so do these
        pretrained.import_file(name, path, unverified=True, weights_dir=root / "weights")
    return root / "weights"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (reason := _reference_missing()) is not None:
        pytest.skip(reason)
    return openl3_weights(tmp_path_factory.getbasetemp() / "openl3")


@pytest.fixture(scope="module")
def emb(weights_dir: Path):  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    return create("openl3", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})


def music(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    return conftest.music(seconds, seed, sr, harmonics=7, tremolo_hz=3)


def torchopenl3_embedding(model, audio: np.ndarray, hop_s: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torchopenl3

    out, _ = torchopenl3.get_audio_embedding(audio, SR, model=model, center=False, hop_size=hop_s, verbose=False)
    return out[0].numpy()


@pytest.fixture(scope="module")
def two_windows(emb):  # type: ignore[no-untyped-def]
    """A 2-s clip, its two 1-s windows, our batch embedding of them and torchopenl3's."""
    audio = music(2.0)
    windows = audio.reshape(2, SR)
    ref = torchopenl3_embedding(reference_model(), audio, 1.0)
    return audio, windows, emb.embed(windows), ref


def test_import_does_not_load_torch() -> None:
    code = "import sys, tagstore.embedders.openl3; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_equals_torchopenl3(emb, two_windows) -> None:  # type: ignore[no-untyped-def]
    audio, _, ours, ref = two_windows
    assert ref.shape == (2, 512) and ours.shape == (2, 512) and ours.dtype == np.float32 and ref.std() > 0.01
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    from tagstore.embedders.host import TrackEmbedder

    track = TrackEmbedder([emb]).embed_audio(audio, SR)  # 1-s windows every 1 s: the same two windows
    np.testing.assert_allclose(track.vector, ref.mean(0), rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_batch_equals_single(emb, two_windows) -> None:  # type: ignore[no-untyped-def]
    _, windows, batch, _ = two_windows
    np.testing.assert_allclose(emb.embed(windows[1:]), batch[1:], rtol=1e-4, atol=1e-5 * np.abs(batch).max())
    assert emb.embed(np.zeros((0, SR), np.float32)).shape == (0, 512)
    with pytest.raises(ValueError, match="48000"):
        emb.embed(np.zeros((1, 16000), np.float32))


def test_6144_equals_torchopenl3(weights_dir: Path) -> None:
    import torch

    from tagstore.embedders import create

    big = create("openl3", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1",
                            "embedding_size": "6144"})
    model = reference_model(6144)
    model.load_state_dict(torch.load(weights_dir.parent / "torchopenl3_mel256_music_6144.pth.tar"))
    audio = music(1.0, seed=2)
    ref = torchopenl3_embedding(model, audio, 1.0)
    ours = big.embed(audio[None])
    assert ref.shape == ours.shape == (1, 6144) and big.options["embedding_size"] == 6144
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_contract_and_options(emb, weights_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create
    from tagstore.errors import EmbedderError

    assert (emb.sample_rate, emb.window_samples, emb.hop_samples, emb.dim) == (48000, 48000, 48000, 512)
    assert emb.describe()["options"] == {"embedding_size": 512, "content_type": "music", "input_repr": "mel256"}
    overlap = create("openl3", {"weights_dir": str(weights_dir), "device": "cpu", "hop": "0.5"})
    assert overlap.hop_samples == 24000 and overlap.describe()["hop_s"] == 0.5
    with pytest.raises(EmbedderError, match="512 or 6144"):
        create("openl3", {"weights_dir": str(weights_dir), "embedding_size": "128"})
    with pytest.raises(EmbedderError, match="hop must be a positive number"):
        create("openl3", {"weights_dir": str(weights_dir), "hop": "-1"})
