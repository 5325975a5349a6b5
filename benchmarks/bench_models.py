"""Benchmark the pre-trained embedders on the CPU: throughput in multiples of real time.

    python benchmarks/bench_models.py                      # vggish, openl3, passt and the Combined
    python benchmarks/bench_models.py --models vggish --seconds 120 --threads 1

Weights: seeded random tensors of the published shapes (PaSST with all 12 blocks), installed
unverified into a temporary cache with ``tagstore.pretrained.import_file``: speed does not depend on the
values. Audio: seeded music-like signal held in memory at 44.1 kHz, embedded with
``TrackEmbedder.embed_audio`` (resampling, windowing, batching, forward passes and pooling, no
decoding). Prints a markdown table on stdout (progress on stderr):

* windows: windows embedded for the clip (window and hop of each model's defaults).
* s / window: wall time per window; x real time: clip seconds per wall second (higher is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 44100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_checkpoint(shapes: dict[str, tuple[int, ...]], path: Path, seed: int) -> Path:
    """Save seeded tensors of ``shapes`` as a PyTorch state dict (std ~ He for weights)."""
    import torch

    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = (2.0 / fan_in) ** 0.5 if len(shape) > 1 else 0.1
        arr = rng.standard_normal(shape, dtype=np.float32) * scale
        if key.endswith(("running_var", "norm1.weight", "norm2.weight", "norm.weight", "head.0.weight")):
            arr = 1.0 + np.abs(arr)
        elif key.endswith("mel_basis"):  # a filterbank is non-negative (its output goes through a sqrt)
            arr = np.abs(arr)
        state[key] = torch.from_numpy(arr)
    torch.save(state, path)
    return path


def install_random_weights(cache: Path) -> None:
    from tagstore.embedders import pretrained, weights
    from tagstore.embedders import openl3, passt, vggish

    tmp = cache.parent
    for name, shapes in (("vggish", vggish.PARAM_SHAPES), ("openl3", openl3.PARAM_SHAPES),
                         ("passt", passt.param_shapes(12))):
        bundle = weights.BUNDLES[name]
        log(f"installing random {name} weights")
        src = random_checkpoint(dict(shapes), tmp / bundle.file_name, seed=len(name))
        pretrained.import_file(name, src, unverified=True, weights_dir=cache)
        src.unlink()


def music(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
    x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 8))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(t.shape[0])
    return (0.3 * x).astype(np.float32)


def bench(spec: str, seconds: float, threads: int | None) -> tuple[int, float]:
    """Windows embedded and wall seconds for one ``embed_audio`` of a ``seconds`` clip (after a warm-up)."""
    from tagstore.embedders.host import TrackEmbedder

    opts = ":device=cpu" + (f":threads={threads}" if threads else "")
    te = TrackEmbedder.from_spec(",".join(s + opts for s in spec.split(",")))
    te.embed_audio(music(min(seconds, 11.0), seed=1), SR)  # warm-up: allocator, kernels
    counts = {"n": 0}
    for e in te.embedders:
        original = e.embed_tags

        def counting(windows: np.ndarray, original=original):  # type: ignore[no-untyped-def]
            counts["n"] += windows.shape[0]
            return original(windows)

        e.embed_tags = counting  # type: ignore[method-assign]
    audio = music(seconds)
    start = time.perf_counter()
    te.embed_audio(audio, SR)
    return counts["n"], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vggish,openl3,passt,vggish+openl3+passt",
                    help="comma-separated specs; '+' joins a Combined embedding")
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length in seconds")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all allowed)")
    args = ap.parse_args()
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or min(torch.get_num_threads(), cpus or 1)
    with tempfile.TemporaryDirectory(prefix="tagstore-bench-models-") as tmp:
        cache = Path(tmp) / "weights"
        install_random_weights(cache)
        os.environ["TAGSTORE_WEIGHTS_DIR"] = str(cache)
        rows = []
        for spec in args.models.split(","):
            log(f"embedding {args.seconds:.0f} s with {spec}")
            n, wall = bench(spec.replace("+", ","), args.seconds, threads)
            rows.append((spec.replace("+", " + "), n, wall / n, args.seconds / wall))
    print(f"CPU: {cpus} cores allowed, torch {torch.__version__}, {threads} threads; clip {args.seconds:.0f} s at 44.1 kHz\n")
    print("| model | windows | s / window | x real time |")
    print("| --- | ---: | ---: | ---: |")
    for name, n, per, xrt in rows:
        print(f"| {name} | {n} | {per:.3f} | {xrt:.2f} |")


if __name__ == "__main__":
    main()
