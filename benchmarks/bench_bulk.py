"""Bulk ingest on Ray Data against a plain ``add``, on the same machine: tracks per second, x real time.

    python benchmarks/bench_bulk.py --files 48 --seconds 30 --cpus 2 --embedders dsp
    python benchmarks/bench_bulk.py --embedders musicnn        # random musicnn weights (speed does not depend on them)

Synthesises ``--files`` seeded 44.1 kHz FLAC files of ``--seconds`` each, then builds two stores from them:
``api.add`` (one process, torch/numpy threads as configured) and ``api.add(ray="local")`` on a local Ray
started with ``--cpus`` CPUs (decode tasks, embedding actors, shard writes, then the import). Wall time
includes everything each command does (the Ray start, shards, import and index sync for the Ray path).
Prints a markdown table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
SR = 44100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--embedders", default="dsp")
    ap.add_argument("--shard-size", type=int, default=16)
    args = ap.parse_args()
    import ray
    import soundfile as sf

    from bench_models import music
    from tagstore import api

    with tempfile.TemporaryDirectory(prefix="tagstore-bench-bulk-") as tmp:
        root = Path(tmp)
        if "musicnn" in args.embedders:
            from test_musicnn import fake_wheel

            from tagstore.embedders import pretrained

            pretrained.import_file("musicnn", fake_wheel(root / "m.whl"), unverified=True, weights_dir=root / "w")
            os.environ["TAGSTORE_WEIGHTS_DIR"] = str(root / "w")
        log(f"writing {args.files} x {args.seconds:.0f} s FLAC")
        (root / "music").mkdir()
        for i in range(args.files):
            sf.write(str(root / "music" / f"{i:03d}.flac"), music(args.seconds, seed=i), SR)
        audio_s = args.files * args.seconds
        rows = []
        log("plain add")
        store = api.init(root / "plain", embedders=args.embedders)
        t0 = time.perf_counter()
        report = api.add(store, [root / "music"])
        rows.append(("`add`", len(report.added), time.perf_counter() - t0))
        log(f"add --ray local ({args.cpus} CPUs)")
        store = api.init(root / "ray", embedders=args.embedders)
        t0 = time.perf_counter()
        report = api.add(store, [root / "music"], ray="local", ray_cpus=args.cpus, files_per_shard=args.shard_size)
        rows.append((f"`add --ray local` ({args.cpus} CPUs, shards of {args.shard_size})", len(report.added),
                     time.perf_counter() - t0))  # fmt: skip
        if ray.is_initialized():
            ray.shutdown()
    print(f"\n{os.cpu_count()} CPUs, embedders {args.embedders}, {args.files} files x {args.seconds:.0f} s at 44.1 kHz\n")
    print("| command | tracks | wall s | tracks/s | x real time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, n, wall in rows:
        print(f"| {name} | {n} | {wall:.1f} | {n / wall:.2f} | {audio_s / wall:.0f} |")


if __name__ == "__main__":
    main()
