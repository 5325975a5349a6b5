"""PaSST backend: equals hear21passt's scene embeddings on the same weights file.

The weights are hear21passt's own ``PaSST`` class with the ``passt_s_swa_p16_128_ap476`` configuration and
seeded random weights, but 2 transformer blocks instead of 12 to keep the tests fast on a CPU (the block
count is read from the weights; every block has the published shapes). The file is saved like the
published checkpoint and installed unverified. The reference is hear21passt 0.0.26 (a test-only
dependency): ``PasstBasicWrapper`` around the model with ``get_basic_model``'s mel front end.
"""

from __future__ import annotations

import contextlib
import functools
import io
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # hear21passt's chatter

SR = 32000
WINDOW = 10 * SR
DEPTH = 2


def _reference_missing() -> str | None:
    try:
        import hear21passt  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return f"the PaSST reference needs torch and hear21passt (pip install hear21passt==0.0.26): {exc}"
    return None


def reference_net(seed: int = 0, depth: int = DEPTH):  # type: ignore[no-untyped-def]
    """hear21passt's PaSST in the ``passt_s_swa_p16_128_ap476`` configuration, seeded random weights."""
    import torch
    from hear21passt.models.passt import PaSST

    torch.manual_seed(seed)
    net = PaSST(img_size=(128, 998), patch_size=16, stride=(10, 10), in_chans=1, num_classes=527, embed_dim=768,
                depth=depth, num_heads=12, distilled=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name or name.startswith("head.0"):  # layer norms: not just ones and zeros
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return net.eval()


def reference_model(net, mode: str = "all"):  # type: ignore[no-untyped-def]
    """``get_basic_model``'s wrapper (mel front end and scene embeddings) around ``net``."""
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper

    with contextlib.redirect_stdout(io.StringIO()):
        mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                             htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    return PasstBasicWrapper(mel=mel, net=net, mode=mode).eval()


@functools.lru_cache(maxsize=None)
def passt_weights(root: Path) -> Path:
    """A weights cache under ``root`` with the seeded PaSST installed (once per run)."""
    import torch

    from tagstore.embedders import pretrained

    root.mkdir(parents=True, exist_ok=True)
    path = root / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(reference_net().state_dict(), path)
    pretrained.import_file("passt", path, unverified=True, weights_dir=root / "weights")
    return root / "weights"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (reason := _reference_missing()) is not None:
        pytest.skip(reason)
    return passt_weights(tmp_path_factory.getbasetemp() / "passt")


@pytest.fixture(scope="module")
def emb(weights_dir: Path):  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    return create("passt", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1", "logits": "true"})


def music(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    return conftest.music(seconds, seed, sr, harmonics=7, tremolo_hz=3)


@pytest.fixture(scope="module")
def fifteen_seconds(emb):  # type: ignore[no-untyped-def]
    """A 15-s clip, its two half-overlapping 10-s windows, our batch embedding and hear21passt's scene embeddings."""
    import torch

    audio = music(15.0)
    windows = np.stack([audio[:WINDOW], audio[SR * 5 : SR * 5 + WINDOW]])
    ref_model = reference_model(reference_net())
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        from hear21passt.base import get_scene_embeddings

        ref = get_scene_embeddings(torch.from_numpy(windows), ref_model).numpy()
    return audio, windows, emb.embed(windows), ref


def test_import_does_not_load_torch() -> None:
    code = "import sys, tagstore.embedders.passt; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_equals_hear21passt_scene_embeddings(emb, fifteen_seconds) -> None:  # type: ignore[no-untyped-def]
    audio, _, ours, ref = fifteen_seconds
    assert ref.shape == ours.shape == (2, 527 + 768) and ours.dtype == np.float32 and emb.depth == DEPTH
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    from tagstore.embedders.host import TrackEmbedder

    # The host cuts the same two windows (10 s every 5 s) and pools them by their mean.
    track = TrackEmbedder([emb]).embed_audio(audio, SR)
    np.testing.assert_allclose(track.vector, ref.mean(0), rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_features_only_and_batch_equals_single(weights_dir: Path, fifteen_seconds) -> None:  # type: ignore[no-untyped-def]
    from tagstore.embedders import create

    _, windows, _, ref = fifteen_seconds
    features = create("passt", {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})
    assert features.dim == 768 and features.options == {"logits": False}
    single = features.embed(windows[1:])
    np.testing.assert_allclose(single, ref[1:, 527:], rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert features.embed(np.zeros((0, WINDOW), np.float32)).shape == (0, 768)
    with pytest.raises(ValueError, match="320000"):
        features.embed(np.zeros((1, SR), np.float32))


def test_mel_banks_are_kaldis() -> None:
    torch = pytest.importorskip("torch")
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    from tagstore.embedders.passt import mel_banks

    banks, _ = kaldi.get_mel_banks(128, 1024, 32000, 0.0, 15000.0, vtln_low=100.0, vtln_high=-500.0,
                                   vtln_warp_factor=1.0)
    expected = torch.nn.functional.pad(banks, (0, 1)).numpy()
    np.testing.assert_allclose(mel_banks(), expected, atol=3e-5)  # kaldi computes in float32, we in float64


def test_options(weights_dir: Path) -> None:
    from tagstore.embedders import create
    from tagstore.errors import EmbedderError

    dense = create("passt", {"weights_dir": str(weights_dir), "device": "cpu", "hop": "2.5"})
    assert (dense.window_samples, dense.hop_samples) == (320000, 80000)
    with pytest.raises(EmbedderError, match="longer than the 10-s window"):
        create("passt", {"weights_dir": str(weights_dir), "hop": "12"})
    with pytest.raises(EmbedderError, match="logits must be true or false"):
        create("passt", {"weights_dir": str(weights_dir), "logits": "all"})
