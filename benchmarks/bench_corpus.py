"""Benchmark the demo corpus: planning, MIDI composition and full synthesis (clips/s).

    python benchmarks/bench_corpus.py --clips 400 --workers 0,1

Prints a markdown table on stdout (progress on stderr):

* plan s: :func:`tagstore.corpus.plan_corpus` (tracks, tags, split; no MIDI, no audio).
* compose s: composing every clip's MIDI bytes in this process (pretty_midi), no rendering.
* make s / clips/s: :func:`tagstore.corpus.make_corpus` end to end (compose, render through the
  soundfont with midirenderer, resample, normalise, write WAV + MIDI + labels.csv), ``workers``
  processes (0 = ``os.cpu_count()``); x realtime = seconds of audio made per wall-clock second.
* MB: size of what was written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tagstore.corpus import make_corpus, plan_corpus
from tagstore.corpus.compose import midi_bytes


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--workers", default="0", help="comma-separated; 0 = os.cpu_count()")
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t = time.perf_counter()
    plan = plan_corpus(args.clips, args.seed, args.clip_s)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    for clip in plan.clips:
        midi_bytes(clip)
    compose_s = time.perf_counter() - t
    print(f"cpu_count={os.cpu_count()} clips={args.clips} tracks={len(plan.tracks)} "
          f"plan {plan_s:.2f} s, compose {compose_s:.2f} s", file=sys.stderr)

    print("| clips | workers | plan s | compose s | make s | clips/s | x realtime | MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in (int(x) for x in args.workers.split(",")):
        workers = w or os.cpu_count() or 1
        with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
            step = max(1, args.clips // 10)
            s = make_corpus(tmp, args.clips, args.seed, args.clip_s, args.sample_rate,
                            progress=lambda i, n: i % step == 0 and print(f"  {i}/{n}", file=sys.stderr),
                            workers=workers)
            print(f"| {s.n_clips} | {workers} | {plan_s:.2f} | {compose_s:.2f} | {s.seconds:.1f} | "
                  f"{s.clips_per_second:.2f} | {s.clips_per_second * args.clip_s:.1f} | "
                  f"{_size_mb(Path(tmp)):.0f} |", flush=True)


if __name__ == "__main__":
    main()
