"""Does tagstore's PyTorch musicnn compute what the original TensorFlow package computes?

Synthesises seeded music-like 16 kHz clips (1-4 patches each, quiet enough that the original's float16
spectrogram stays finite), runs the original ``musicnn.extractor.extractor`` on them in a throwaway TF venv
(see musicnn_common.py), runs the port the way the host does (lead-in, windows of 48128 every 47872) and
compares, per clip, the ``max_pool`` features and the tag probabilities: relative L2 error of the track
means (what tagstore stores) and the worst single patch. Also reported: the port's network fed the
original's own log-mel patches (the network alone) and the port with plain float32 log-mel (no float16
rounding), to show what each part contributes. Exit status 1 if any clip is off by more than 1e-4.

    .venv/bin/python benchmarks/musicnn_equivalence.py [--clips 24] [--out /tmp/musicnn-eq]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from musicnn_common import SR, TF_ENV, ensure_weights, log, music_clip, tf_venv, windows  # noqa: E402

ORIGINAL = r"""
import json, sys, numpy as np
from musicnn.extractor import batch_data, extractor
files, out = json.loads(sys.argv[1]), sys.argv[2]
res = {}
for i, f in enumerate(files):
    res[f"logmel/{i}"] = batch_data(f, 187, 187)[0].astype(np.float32)
    for model in ("MSD_musicnn", "MTT_musicnn"):
        taggram, _, feats = extractor(f, model=model, input_length=3, input_overlap=False, extract_features=True)
        res[f"{model}/{i}/tags"] = taggram
        res[f"{model}/{i}/max_pool"] = feats["max_pool"]
np.savez(out, **res)
"""

TOL = 1e-4


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--out", type=Path, default=None, help="keep clips and outputs here (default: a temp folder)")
    args = ap.parse_args()
    py, wheel = tf_venv()

    from tagstore.embedders import create

    ensure_weights(wheel)

    work = args.out or Path(tempfile.mkdtemp(prefix="musicnn-eq-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    files, clips = [], []
    for i in range(args.clips):
        n_patches, extra = 1 + i % 4, int(rng.integers(0, 40000))
        audio = music_clip((n_patches * 47872 + extra) / SR, seed=i, mel_peak=float(rng.uniform(0.3, 5.0)))
        path = work / f"clip{i:02d}.wav"
        sf.write(path, audio, SR, subtype="FLOAT")
        files.append(str(path))
        clips.append(audio)
    log(f"running the original TensorFlow musicnn on {len(files)} clips (graph rebuilt per call, as the package does)")
    done = subprocess.run([str(py), "-c", ORIGINAL, json.dumps(files), str(work / "original.npz")],
                          env=TF_ENV, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the original failed:\n{done.stderr[-3000:]}")
    ref = np.load(work / "original.npz")

    worst = worst_patch = 0.0
    for model in ("MSD", "MTT"):
        emb = create("musicnn", {"model": model})
        key = f"{model}_musicnn"
        print(f"\n{key}: relative L2 error of the port against the original, per clip (all its patches) | worst patch")
        print(f"{'clip':>4} {'sec':>6} {'patches':>7} {'max_pool':>19} {'tags':>19} {'net only':>9} {'fp32 mel':>9}")
        for i, audio in enumerate(clips):
            out = emb.outputs(windows(sf.read(files[i], dtype="float32")[0], emb))
            mp, tg = ref[f"{key}/{i}/max_pool"], ref[f"{key}/{i}/tags"]
            assert out["max_pool"].shape == mp.shape, (out["max_pool"].shape, mp.shape)
            e_mp, e_tg = rel(out["max_pool"], mp), rel(out["tags"], tg)
            p_mp = max(rel(a, b) for a, b in zip(out["max_pool"], mp))
            p_tg = max(rel(a, b) for a, b in zip(out["tags"], tg))
            net = emb.outputs(logmel=ref[f"logmel/{i}"])  # the original's own input: the network alone
            e_net = max(rel(net["max_pool"], mp), rel(net["tags"], tg))
            lm32 = emb.logmel(windows(audio, emb), original_rounding=False)
            e_32 = rel(emb.outputs(logmel=lm32)["max_pool"], mp)
            worst, worst_patch = max(worst, e_mp, e_tg), max(worst_patch, p_mp, p_tg)
            print(f"{i:>4} {audio.shape[0] / SR:>6.2f} {mp.shape[0]:>7} {e_mp:>9.1e} | {p_mp:>7.1e} "
                  f"{e_tg:>9.1e} | {p_tg:>7.1e} {e_net:>9.1e} {e_32:>9.1e}")
    verdict = "PASS" if worst <= TOL else "FAIL"
    print(f"\nworst per-clip relative L2 error (max_pool and tags, {len(clips)} clips x 2 models): {worst:.2e}, "
          f"tolerance {TOL:.0e}: {verdict}; worst single patch: {worst_patch:.2e}")
    print("net only: the port's network fed the original's own log-mel patches (max_pool and tags); fp32 mel: the "
          "port without the original's float16 rounding of the log-mel (max_pool)")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
