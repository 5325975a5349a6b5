"""Throughput of tagstore's PyTorch musicnn against the original TensorFlow package, on the same clips.

Both run from the audio file to MSD_musicnn's max_pool features and tags, decoding and spectrogram
included. The original (in the throwaway TF venv of musicnn_common.py) builds its graph once and reuses
the session; per file it runs its own ``batch_data`` (librosa) and feeds the patches as the package does
(one patch per ``session.run``), and also all of a file's patches in one run. The port reads the file with
soundfile, cuts the host's windows and calls ``embed_tags`` in batches of ``batch_size``. Rounds alternate
between the two (the machine is shared); each row reports its best round.

    .venv/bin/python benchmarks/musicnn_speed.py [--clips 16] [--seconds 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from musicnn_common import SR, TF_ENV, ensure_weights, log, music_clip, tf_venv, windows  # noqa: E402

ORIGINAL = r"""
import json, os, sys, time, numpy as np, tensorflow as tf
from musicnn import models
from musicnn.extractor import batch_data
tf.compat.v1.disable_eager_execution()
files, per_run = json.loads(sys.argv[1]), sys.argv[2]
x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
is_training = tf.compat.v1.placeholder(tf.bool)
with tf.name_scope("model"):
    y, *_feats = models.define_model(x, is_training, "MSD_musicnn", 50)
    max_pool = _feats[6]
    tags = tf.nn.sigmoid(y)
sess = tf.compat.v1.Session()
tf.compat.v1.train.Saver().restore(sess, os.path.dirname(models.__file__) + "/MSD_musicnn/")
sess.run([tags, max_pool], {x: batch_data(files[0], 187, 187)[0][:1], is_training: False})  # warm up (numba, TF)
t0 = time.perf_counter()
for f in files:
    batch, _ = batch_data(f, 187, 187)
    step = 1 if per_run == "1" else len(batch)
    for i in range(0, len(batch), step):
        sess.run([tags, max_pool], {x: batch[i : i + step], is_training: False})
print(json.dumps({"wall": time.perf_counter() - t0, "threads": os.cpu_count()}))
"""


def run_original(py: Path, files: list[str], per_run: str) -> float:
    done = subprocess.run([str(py), "-c", ORIGINAL, json.dumps(files), per_run], env=TF_ENV,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the original failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["wall"])


def run_port(emb, files: list[str]) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for f in files:
        w = windows(sf.read(f, dtype="float32")[0], emb)
        for i in range(0, len(w), emb.batch_size):
            emb.embed_tags(w[i : i + emb.batch_size])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    py, wheel = tf_venv()

    import torch

    from tagstore.embedders import create

    ensure_weights(wheel)
    work = Path(tempfile.mkdtemp(prefix="musicnn-speed-"))
    files = []
    for i in range(args.clips):
        path = work / f"clip{i:02d}.wav"
        sf.write(path, music_clip(args.seconds, seed=100 + i, mel_peak=3.0), SR, subtype="PCM_16")
        files.append(str(path))
    audio_s = sum(sf.info(f).frames for f in files) / SR

    emb = create("musicnn")
    run_port(emb, files[:1])  # warm up
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for name, fn in [
            ("original, 1 patch per run (as the package)", lambda: run_original(py, files, "1")),
            ("original, a file's patches per run", lambda: run_original(py, files, "all")),
            (f"port ({emb.device}, {emb.threads} threads, batch {emb.batch_size})", lambda: run_port(emb, files)),
        ]:
            wall = fn()
            log(f"round {r + 1}: {name}: {wall:.2f} s")
            best[name] = min(best.get(name, np.inf), wall)
    print(f"\nmusicnn MSD max_pool + tags, file to outputs, {os.cpu_count()} CPUs, best of {args.rounds} rounds")
    print(f"{'implementation':<48} {'clips':>5} {'audio s':>8} {'wall s':>7} {'x real time':>11}")
    for name, wall in best.items():
        print(f"{name:<48} {len(files):>5} {audio_s:>8.1f} {wall:>7.2f} {audio_s / wall:>11.1f}")
    port = [v for k, v in best.items() if k.startswith("port")][0]
    fastest_original = min(v for k, v in best.items() if k.startswith("original"))
    print(f"\nport throughput / best original: {fastest_original / port:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
