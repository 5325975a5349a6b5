"""The GPU embedding paths: decoding ahead in worker processes, pinned transfers, batch sizes from GPU memory.

On a machine without CUDA the decode-ahead path and the CPU side of the transfers run; the CUDA checks
skip with a reason (run them with ``benchmarks/gpu_check.sh`` on a GPU machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_clip
from tagstore import api
from tagstore.embedders.host import TrackEmbedder, decode

torch = pytest.importorskip("torch", reason="the torch backends need torch (the `torch` extra)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU visible to torch")


def test_decoded_in_another_process_equals_streamed(library: Path, tmp_path: Path) -> None:
    write_clip(library / "b" / "silent.wav", "silence", seconds=2.0)
    plain = api.init(tmp_path / "plain", embedders="dsp")
    ahead = api.init(tmp_path / "ahead", embedders="dsp")
    a = api.add(plain, [library], decode_workers=0)
    b = api.add(ahead, [library], decode_workers=1)  # one spawned decoding process, files queued ahead
    assert [x["path"] for x in a.added] == [x["path"] for x in b.added] and len(a.added) == 12
    assert [(x["path"], x["error"]) for x in a.failed] == [(x["path"], x["error"]) for x in b.failed] != []
    ids = [x["id"] for x in a.added]
    np.testing.assert_allclose(plain.embeddings(ids), ahead.embeddings(ids), rtol=1e-5, atol=1e-6)


def test_decode_matches_the_stream_and_checks_rates(library: Path) -> None:
    embedder = TrackEmbedder.from_spec("dsp")
    path = sorted(library.rglob("*.wav"))[3]
    decoded = decode(path, embedder.rates, embedder.min_duration_s)
    np.testing.assert_allclose(embedder.embed_decoded(decoded).vector, embedder.embed_file(path).vector, rtol=1e-6)
    decoded.samples.clear()
    with pytest.raises(ValueError, match="lacks the rate"):
        embedder.embed_decoded(decoded)


def test_transfers_and_batch_sizes_on_cpu() -> None:
    from tagstore.embedders import _torch

    cpu = torch.device("cpu")
    move = _torch.HostToDevice(torch, cpu)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    x.setflags(write=False)  # read-only input (a window view) is copied, not shared
    t = move(x)
    assert t.device.type == "cpu" and t.shape == (3, 4) and np.array_equal(t.numpy(), x)
    assert _torch.batch_size_for(torch, cpu, 1 << 20, 32, given=False) == 32  # the CPU keeps the backend's default


@needs_cuda
def test_cuda_transfers_and_batch_size_from_memory() -> None:
    from tagstore.embedders import _torch

    cuda = torch.device("cuda")
    move = _torch.HostToDevice(torch, cuda)
    for n in (3, 5000, 2):  # the pinned buffer grows, then is reused
        x = np.random.default_rng(n).standard_normal((n, 7)).astype(np.float32)
        t = move(x)
        assert t.device.type == "cuda" and np.array_equal(t.cpu().numpy(), x)
    assert move._pinned.is_pinned()
    free, _ = torch.cuda.mem_get_info()
    size = _torch.batch_size_for(torch, cuda, 48 << 20, 32, given=False)
    assert 32 <= size <= _torch.MAX_CUDA_BATCH and (size == _torch.MAX_CUDA_BATCH or size == free // 2 // (48 << 20) or size == 32)
    assert _torch.batch_size_for(torch, cuda, 48 << 20, 7, given=True) == 7


@needs_cuda
def test_musicnn_on_cuda_equals_cpu(tmp_path: Path) -> None:
    from test_musicnn import fake_wheel

    from tagstore.embedders import create, pretrained

    pretrained.import_file("musicnn", fake_wheel(tmp_path / "fake.whl"), unverified=True, weights_dir=tmp_path / "w")
    cpu = create("musicnn", {"weights_dir": str(tmp_path / "w"), "device": "cpu", "threads": "1"})
    gpu = create("musicnn", {"weights_dir": str(tmp_path / "w"), "device": "cuda"})
    assert gpu.device.type == "cuda" and gpu.batch_size >= cpu.batch_size
    windows = np.random.default_rng(0).standard_normal((9, 48128)).astype(np.float32) * 0.1
    a, b = cpu.outputs(windows), gpu.outputs(windows)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-4)
