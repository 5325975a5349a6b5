"""The embedder contract over every registered backend, each built with weights made in the test.

Shape and dtype of ``embed``, batch == one at a time, repeatable, pooling and short-clip padding, the
layout record, and clear errors for bad shapes. A backend added to the registry must be buildable here
(a builder below), or this test fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tagstore.embedders import REGISTRY, Embedder, create
from tagstore.embedders.host import TrackEmbedder


def _torch_or_skip() -> None:
    pytest.importorskip("torch", reason="torch backends need the 'torch' extra")


def _musicnn(root: Path) -> Embedder:
    _torch_or_skip()
    from test_musicnn import fake_wheel

    from tagstore.embedders import pretrained

    pretrained.import_file("musicnn", fake_wheel(root / "fake.whl"), unverified=True, weights_dir=root / "weights")
    return create("musicnn", {"weights_dir": str(root / "weights"), "device": "cpu", "threads": "1"})


def _aisfx(root: Path) -> Embedder:
    _torch_or_skip()
    import torch
    from test_aisfx import fake_wheel

    from tagstore.embedders import pretrained

    pretrained.import_file("aisfx", fake_wheel(root / "fake.whl", torch), unverified=True, weights_dir=root / "weights")
    return create("aisfx", {"weights_dir": str(root / "weights"), "device": "cpu", "threads": "1"})


def _reference_backend(module: str, helper: str, name: str) -> Callable[[Path], Embedder]:
    def build(root: Path) -> Embedder:
        _torch_or_skip()
        mod = __import__(module)
        if (reason := mod._reference_missing()) is not None:
            pytest.skip(reason)
        weights_dir = getattr(mod, helper)(root)
        return create(name, {"weights_dir": str(weights_dir), "device": "cpu", "threads": "1"})

    return build


BUILDERS: dict[str, Callable[[Path], Embedder]] = {
    "dsp": lambda root: create("dsp"),
    "musicnn": _musicnn,
    "aisfx": _aisfx,
    "vggish": _reference_backend("test_vggish", "vggish_weights", "vggish"),
    "openl3": _reference_backend("test_openl3", "openl3_weights", "openl3"),
    "passt": _reference_backend("test_passt", "passt_weights", "passt"),
}


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    name = request.param
    assert name in BUILDERS, f"registered embedder {name!r} has no builder in the contract test"
    return BUILDERS[name](tmp_path_factory.mktemp(f"contract-{name}"))


def _windows(emb: Embedder, n: int, seed: int = 0) -> np.ndarray:
    """``(n, window_samples)`` harmonic notes with a little noise at the backend's rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(emb.window_samples) / emb.sample_rate
    rows = []
    for _ in range(n):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
        rows.append(0.3 * x + 0.02 * rng.standard_normal(t.shape[0]))
    return np.asarray(rows, dtype=np.float32)


def test_embed_shape_dtype_batch_and_repeatable(backend: Embedder) -> None:
    emb = backend
    assert emb.window_samples == int(round(emb.window_s * emb.sample_rate)) and emb.hop_samples > 0
    batch = _windows(emb, 3)
    out = emb.embed(batch)
    assert out.shape == (3, emb.window_dim) and out.dtype == np.float32 and np.isfinite(out).all()
    rows = np.vstack([emb.embed(batch[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(out, rows, rtol=1e-4, atol=1e-4 * float(np.abs(out).max()))  # batch == single
    np.testing.assert_array_equal(emb.embed(batch), out)  # repeatable


def test_pool_pad_and_layout_record(backend: Embedder) -> None:
    emb = backend
    pooled = emb.pool(emb.embed(_windows(emb, 2, seed=1)))
    assert pooled.shape == (emb.dim,) and pooled.dtype == np.float32
    short = _windows(emb, 1, seed=2)[0, : emb.window_samples // 3]
    assert emb.pad_short(short).shape == (emb.window_samples,)
    record = emb.describe()
    assert record["name"] == emb.name and record["dim"] == emb.dim and record["sample_rate"] == emb.sample_rate
    assert TrackEmbedder([emb]).layout.dim == emb.dim


def test_bad_window_shapes_are_refused(backend: Embedder) -> None:
    emb = backend
    with pytest.raises(ValueError, match=str(emb.window_samples)):
        emb.embed(np.zeros((2, emb.window_samples + 1), dtype=np.float32))
    with pytest.raises(ValueError):
        emb.embed(np.zeros(emb.window_samples, dtype=np.float32))
