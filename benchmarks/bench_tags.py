"""Learned tags at catalogue scale, through the store (DuckDB reads and writes included).

    python benchmarks/bench_tags.py --tracks 100000 --dim 512 --examples 20 --new 1000 --tags 50

1. `add-tag` with 20 examples on a 100k-track store: resolve examples, fit (with cross-validation),
   score every track and persist the model, examples and 100k scores in one transaction.
2. `tag` after 1,000 new tracks arrive, for 50 learned tags: score only what is missing and persist.
Synthetic seeded vectors (the issue allows them); prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_store import synthetic_store  # noqa: E402

from tagstore import catalogue as cat  # noqa: E402
from tagstore import api  # noqa: E402
from tagstore.layout import Layout  # noqa: E402


def add_tracks(store, first_id: int, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Append ``n`` tracks with seeded random vectors straight into the catalogue (as ingest would)."""
    layout = Layout.from_json(store.layout.to_json())
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    blobs = np.empty(n, dtype=object)
    blobs[:] = [v.tobytes() for v in rng.standard_normal((n, layout.dim), dtype=np.float32)]
    with cat.transaction(store.path) as con:
        con.register("part", {"id": ids, "v": blobs})
        con.execute(
            """INSERT INTO tracks (id, path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate, channels)
               SELECT id, '/music/new' || id || '.flac', 'sha256:new' || id, 0, 0, 180.0, 44100, 2 FROM part"""
        )
        con.execute("INSERT INTO embeddings SELECT id, ?, v::BLOB FROM part", [layout.digest])
        cat.bump_generation(con)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--tags", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "s", args.tracks, args.dim)
        api.rebuild(store)  # the index record carries the catalogue statistics, as in a real store
        add_times = []
        for r in range(args.repeats):
            examples = [str(i) for i in rng.choice(np.arange(1, args.tracks + 1), args.examples, replace=False)]
            t0 = time.perf_counter()
            summary = api.add_tag(store, f"bench-{r}", examples, method="ensemble")
            add_times.append(time.perf_counter() - t0)
            assert summary.scored == args.tracks
        for t in range(args.repeats, args.tags):  # the rest of the 50 tags, untimed
            examples = [str(i) for i in rng.choice(np.arange(1, args.tracks + 1), args.examples, replace=False)]
            api.add_tag(store, f"bench-{t}", examples, method="ensemble")
        add_tracks(store, args.tracks + 1, args.new, seed=1)
        t0 = time.perf_counter()
        result = api.tag(store)
        tag_s = time.perf_counter() - t0
        assert result == {**result, "tags": args.tags, "tracks": args.new}, result
    print("| operation | tracks | dim | median s | min s | target |")
    print("|---|---|---|---|---|---|")
    print(f"| `add-tag` ({args.examples} examples, ensemble, CV, score all, persist) | {args.tracks:,} | {args.dim} | "
          f"{statistics.median(add_times):.3f} | {min(add_times):.3f} | < 1 s |")  # fmt: skip
    print(f"| `tag` ({args.new:,} new tracks x {args.tags} tags, persist) | {args.tracks + args.new:,} | {args.dim} | "
          f"{tag_s:.3f} | {tag_s:.3f} | < 1 s |")  # fmt: skip


if __name__ == "__main__":
    main()
