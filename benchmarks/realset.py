"""Build a labelled set of real audio for `tagstore eval` from Debian and PyPI packages, and evaluate on it.

    python benchmarks/realset.py build [--out DIR] [--tunes 40] [--seed 0]
    python benchmarks/realset.py eval  [--out DIR] [--layouts dsp,musicnn,...] [--methods ...] [--draws 5]

``build`` downloads (into ``DIR/downloads``, once; this script is the only place that downloads) and
writes ``DIR/labels.csv`` (columns path,track,tags,split) with audio under ``DIR/audio``:

- ``lmms-common`` and ``sonic-pi-samples`` (Debian: ``apt-get download`` + ``dpkg -x``; run ``apt-get
  update`` once first): instrument and drum samples, effects and loops, tagged by their folder (lmms) or
  file-name prefix (Sonic Pi) and mapped onto shared classes (kick, snare, cymbal, tom, bass, loop, ...).
  Each is written as 44.1 kHz mono WAV, at most 10 s, and padded with silence to 1 s (tagstore refuses
  clips under 0.5 s, and a drum hit followed by silence is the same sound). Files that do not decode are
  left out and listed.
- ``immich-memories-music`` (PyPI wheel, pip download --no-deps): 28 generated tracks (MIT) in five
  moods, acoustic or electronic; three 8-s clips of each, grouped by track (they never straddle splits).
- music21's corpus (``pip install music21``, the ``realset`` extra): tunes of Ryan's Mammoth Collection,
  up to ``--tunes`` per dance type (the ``R:`` field: reel, jig, hornpipe, strathspey, clog, highland
  fling, ...), rendered for 8 s with the demo corpus's soundfont (pretty_midi's TimGM6mb) on one of four
  General MIDI instruments (fiddle, flute, accordion, piano: also a tag).

Splits: within each source class, a seeded 30% of the tracks are test, so every class has both.

``eval`` embeds each backend spec once into an eval store under ``DIR/stores`` (as `tagstore eval` does;
a second run embeds nothing), then runs the few-shot protocol of `tagstore eval` on every layout (a
combined layout's vectors are its blocks' vectors side by side, exactly what its own store would hold) and
prints one markdown table: macro AP at each K for each layout x method, with scikit-learn's
LogisticRegression fitted on the same draws (K positives and K negatives, vectors standardised and
L2-normalised per block) beside it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `tagstore eval` does, before numpy loads

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tagstore.embedders import join_plus  # noqa: E402

RATE = 44100
MIN_S, MAX_S, CLIP_S = 1.0, 10.0, 8.0
DEBS = ("lmms-common", "sonic-pi-samples")
IMMICH = "immich-memories-music==0.1.0"
PROGRAMS = {"fiddle": 40, "flute": 73, "accordion": 21, "piano": 0}
DEFAULT_LAYOUTS = ("dsp;musicnn;musicnn:layer=penultimate;musicnn:layer=mean_pool;musicnn:layer=penultimate:pool=mean+std;"
                   "aisfx;dsp+musicnn;dsp+musicnn:layer=penultimate;dsp+aisfx;musicnn:layer=penultimate+aisfx;"
                   "dsp+musicnn:layer=penultimate+aisfx")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- tags of the samples ---------------------------------------------------------------------------

LMMS_FOLDERS = {  # folder -> tags of every file in it
    "basses": ("bass", "synth"), "bassloops": ("bass", "loop", "synth"), "beats": ("beat", "loop", "drums"),
    "drums": ("drums", "one-shot"), "effects": ("effect",), "instruments": ("instrument",),
    "latin": ("latin",), "misc": ("misc",), "stringsnpads": ("pad",),
}
NAME_RULES = [  # (regex on the file name, tags); shared classes across both sample packages
    (r"^(kick|bassdrum|bd_|drum_bass|drum_heavy_kick|elec_.*kick|rave_kick)", ("kick",)),
    (r"snare|^sn_", ("snare",)),
    (r"hihat|crash|ride|cymbal|splash", ("cymbal",)),
    (r"^tom|drum_tom|fuzz_tom", ("tom",)),
    (r"clap|snap", ("clap",)),
    (r"shaker|cowbell|wood|rim|sidestick|tabla|^perc_|glitch_perc|triangle|bell", ("percussion",)),
    (r"cello|violin|strings|orion_string", ("strings",)),
    (r"organ", ("organ",)),
    (r"piano|harpsichord|clav", ("keys",)),
    (r"flute|trumpet|brass", ("wind",)),
    (r"guitar|^guit_", ("guitar",)),
    (r"choir|chorus", ("choir",)),
    (r"^(loop_|break|jungle|909beat|electro_beat|house_loop)", ("loop",)),
    (r"^(loop_amen|loop_breakbeat|break|jungle|909beat|electro_beat|house_loop)", ("beat",)),
    (r"acid|303|techno|rave|trance|dnb|synth", ("synth",)),
    (r"^bass(?!drum)|(?<!drum)_bass|bassslap", ("bass",)),
    (r"tabla", ("tabla",)),
    (r"^vinyl|scratch", ("vinyl",)),
]
SONIC_PREFIXES = {
    "ambi": ("ambient",), "bass": ("bass", "synth"), "bd": ("drums", "one-shot"), "drum": ("drums", "one-shot"),
    "elec": ("electronic", "one-shot"), "glitch": ("electronic", "glitch"), "guit": ("guitar",), "loop": ("loop",),
    "mehackit": ("electronic",), "misc": ("misc",), "perc": ("percussion", "one-shot"), "sn": ("drums", "one-shot"),
    "tabla": ("tabla", "one-shot"), "vinyl": ("vinyl",),
}


def sample_tags(source: str, folder: str, stem: str) -> tuple[str, set[str]]:
    """The class a sample is split by (its folder or prefix) and its tags."""
    if source == "lmms":
        cls, tags = f"lmms/{folder}", set(LMMS_FOLDERS[folder])
    else:
        prefix = stem.split("_", 1)[0]
        cls, tags = f"sonic-pi/{prefix}", set(SONIC_PREFIXES.get(prefix, ()))
    for pattern, extra in NAME_RULES:
        if re.search(pattern, stem):
            tags.update(extra)
    if tags & {"kick", "snare", "cymbal", "tom", "clap"}:
        tags.add("drums")
    return cls, tags


# --- downloads (this script only) ------------------------------------------------------------------


def run(cmd: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        sys.exit(f"realset: {what} failed ({tail}); check the network (and run `apt-get update` for the Debian packages)")


def fetch_debs(dl: Path) -> Path:
    root = dl / "debian"
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    say(f"downloading {', '.join(DEBS)} (apt-get download) into {dl}")
    run(["apt-get", "download", *DEBS], dl, "apt-get download " + " ".join(DEBS))
    for deb in sorted(dl.glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(root)], dl, f"dpkg -x {deb.name}")
    (root / ".done").touch()
    return root


def fetch_immich(dl: Path) -> Path:
    root = dl / "immich"
    if (root / ".done").exists():
        return root
    say(f"downloading {IMMICH} (pip download --no-deps) into {dl}")
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", IMMICH, "-d", str(dl)], dl,
        "pip download " + IMMICH)
    wheel = next(dl.glob("immich_memories_music-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    (root / ".done").touch()
    return root


# --- writing clips ---------------------------------------------------------------------------------


def write_wav(path: Path, x: np.ndarray) -> None:
    import soundfile as sf

    from tagstore.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1).astype(np.float32), RATE, subtype="PCM_16", format="WAV")
    atomic_write(path, buf.getvalue())


def samples(debian: Path, out: Path) -> tuple[list[dict[str, object]], list[str]]:
    from tagstore import audio

    rows, failed = [], []
    files = [("lmms", p) for d in LMMS_FOLDERS for p in sorted((debian / "usr/share/lmms/samples" / d).iterdir())]
    files += [("sonic-pi", p) for p in sorted((debian / "usr/share/sonic-pi/samples").glob("*.flac"))]
    for source, path in files:
        try:
            x = audio.load(path, RATE, max_s=MAX_S)
        except Exception as exc:  # noqa: BLE001 - a file the decoders refuse is listed and left out
            failed.append(f"{source}/{path.name}: {type(exc).__name__}: {exc}")
            continue
        if x.size == 0 or np.max(np.abs(x)) < 1e-4:
            failed.append(f"{source}/{path.name}: silent or empty")
            continue
        x = np.pad(x, (0, max(0, int(MIN_S * RATE) - x.shape[0])))
        cls, tags = sample_tags(source, path.parent.name, path.stem)
        rel = Path("audio") / source / path.parent.name / f"{path.stem}.wav"
        write_wav(out / rel, x)
        rows.append({"path": str(rel), "track": f"{source}/{path.stem}", "tags": tags, "class": cls})
    return rows, failed


def immich(root: Path, out: Path) -> list[dict[str, object]]:
    from tagstore import audio

    rows = []
    for path in sorted((root / "immich_memories_music" / "tracks").glob("*/*.opus")):
        mood, kind = path.parent.name, path.stem.split("_")[1]
        x = audio.load(path, RATE)
        n = int(CLIP_S * RATE)
        starts = np.linspace(0, max(0, x.shape[0] - n), 3).astype(int)
        for i, s in enumerate(starts):
            rel = Path("audio") / "immich" / f"{path.stem}_{i}.wav"
            write_wav(out / rel, x[s : s + n])
            rows.append({"path": str(rel), "track": f"immich/{path.stem}", "tags": {mood, kind, "song"},
                         "class": f"immich/{mood}"})  # fmt: skip
    return rows


def tunes(out: Path, per_type: int, seed: int) -> list[dict[str, object]]:
    try:
        import music21
    except ImportError:
        say("music21 is not installed (pip install 'tagstore[realset]'): the folk tunes are left out")
        return []
    import pretty_midi

    from tagstore.corpus.render import render_audio

    folder = Path(music21.__file__).parent / "corpus" / "ryansMammoth"
    by_type: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.glob("*.abc")):
        m = re.search(r"^R:\s*(.+)$", path.read_text(encoding="latin-1"), re.M)
        if m:
            by_type[re.sub(r"[\s_-]+", "", m.group(1).strip().lower())].append(path)  # "slip jig" = "slipjig"
    rng = np.random.default_rng(seed)
    rows = []
    for dance, paths in sorted(by_type.items()):
        if len(paths) < 6:
            continue
        for path in [paths[i] for i in sorted(rng.permutation(len(paths))[:per_type])]:
            name = list(PROGRAMS)[int(rng.integers(len(PROGRAMS)))]
            try:
                score = music21.converter.parse(str(path), format="abc")
                mf = music21.midi.translate.music21ObjectToMidiFile(score)
                pm = pretty_midi.PrettyMIDI(io.BytesIO(mf.writestr()))
            except Exception as exc:  # noqa: BLE001 - a tune music21 cannot read is left out
                say(f"  {path.name}: {type(exc).__name__}: {exc}")
                continue
            for inst in pm.instruments:
                inst.program, inst.is_drum = PROGRAMS[name], False
            buf = io.BytesIO()
            pm.write(buf)
            x = render_audio(buf.getvalue(), CLIP_S, RATE, -20.0)
            tag = dance
            rel = Path("audio") / "tunes" / tag / f"{path.stem}.wav"
            write_wav(out / rel, x)
            rows.append({"path": str(rel), "track": f"tunes/{path.stem}", "tags": {tag, name, "folk"},
                         "class": f"tunes/{tag}"})  # fmt: skip
        say(f"  {dance}: {sum(r['class'] == f'tunes/{dance}' for r in rows)} tunes")
    return rows


def assign_splits(rows: list[dict[str, object]], seed: int, test_fraction: float = 0.3) -> None:
    """A seeded ``test_fraction`` of the tracks of each class are test (at least one of two or more)."""
    rng = np.random.default_rng(seed)
    tracks: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["track"] not in tracks[str(r["class"])]:
            tracks[str(r["class"])].append(str(r["track"]))
    test = set()
    for cls in sorted(tracks):
        t = tracks[cls]
        n = int(round(test_fraction * len(t))) if len(t) >= 2 else 0
        test.update(t[i] for i in rng.permutation(len(t))[: max(n, 1 if len(t) >= 2 else 0)])
    for r in rows:
        r["split"] = "test" if r["track"] in test else "train"


def build(args: argparse.Namespace) -> None:
    out = args.out
    dl = out / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, failed = samples(fetch_debs(dl), out)
    say(f"samples: {len(rows)} written, {len(failed)} left out")
    rows += immich(fetch_immich(dl), out)
    rows += tunes(out, args.tunes, args.seed)
    assign_splits(rows, args.seed)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "track", "tags", "split"])
        for r in rows:
            w.writerow([r["path"], r["track"], ";".join(sorted(r["tags"])), r["split"]])  # type: ignore[arg-type]
    (out / "left-out.txt").write_text("".join(f"{line}\n" for line in failed), encoding="utf-8")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        for t in r["tags"]:  # type: ignore[union-attr]
            counts[t][r["split"] == "test"] += 1
    seconds = time.perf_counter() - t0
    print(f"{len(rows)} clips, {len({r['track'] for r in rows})} tracks, {len(counts)} tags -> {out / 'labels.csv'} "
          f"({seconds:.0f} s); left out: {len(failed)} (see left-out.txt)")  # fmt: skip
    print("| tag | train | test |\n|---|---:|---:|")
    for t, (tr, te) in sorted(counts.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {t} | {tr} | {te} |")


# --- evaluation ------------------------------------------------------------------------------------


def sklearn_reference(plan, X: np.ndarray, row: dict[str, int], layout, clips, name: str) -> list:  # type: ignore[no-untyped-def]
    """scikit-learn LogisticRegression on each few-shot draw: the draw's positives and negatives only, on
    the vectors standardised with the train split's statistics and L2-normalised per block."""
    from sklearn.linear_model import LogisticRegression

    from tagstore.evaluation import protocol
    from tagstore.layout import normalise_blocks

    train = [row[c.id] for c in clips if c.split == "train"]
    std = X[train].std(0)
    Z = normalise_blocks(X, layout, X[train].mean(0), np.where(std > 0, std, 1.0))  # constant dims (dead ReLUs)
    Z_test = Z[[row[i] for i in plan.eval_ids]]
    results = []
    for draw in plan.draws:
        if draw.full:
            continue
        idx = [row[i] for i in draw.pos_ids] + [row[i] for i in draw.neg_ids]
        y = np.r_[np.ones(len(draw.pos_ids)), np.zeros(len(draw.neg_ids))]
        lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(Z[idx], y)
        # decision 0 = probability 0.5: the reference's own predicted set, for its F1
        results.append(protocol.score_draw(plan, draw, lr.decision_function(Z_test), name, "sklearn-lr", 0.0))
    return results


def evaluate_layouts(args: argparse.Namespace) -> None:
    """Embed each backend spec once (eval stores), then run the protocol on every layout.

    A combined layout's stored vector is the concatenation of its blocks' pooled vectors (the host
    concatenates them), so it is assembled here from the single stores instead of embedding again; the
    fits are :func:`tagstore.evaluation.fits.fit_all`, as `tagstore eval` runs them.
    """
    from tagstore.evaluation import protocol
    from tagstore.evaluation.fits import fit_all, space
    from tagstore.evaluation.labels import read_clips
    from tagstore.evaluation.protocol import LabelledClip
    from tagstore.evaluation.stores import embed_clips
    from tagstore.layout import Layout
    from tagstore.store import Store

    labels = args.out / "labels.csv"
    if not labels.is_file():
        sys.exit(f"realset: no {labels}; run `python benchmarks/realset.py build --out {args.out}` first")
    shots = [int(k) for k in args.shots.split(",")]
    methods = [m for m in args.methods.split(",") if m]  # none: only the scikit-learn reference
    layouts = [join_plus(s.strip()) for s in args.layouts.split(";") if s.strip()]
    clips = read_clips(labels)
    store_root = args.out / "stores"
    blocks: dict[str, tuple[np.ndarray, dict[str, int], Layout]] = {}
    meta, dropped = [], set()
    for spec in dict.fromkeys(b for layout in layouts for b in layout.split(",")):
        t0 = time.perf_counter()
        say(f"embedding {spec} ...")
        run, X, row = embed_clips(spec, clips, store_root)
        store = Store.open(run.store)
        blocks[spec] = (X, row, store.layout)
        store.close()
        dropped |= {c.id for c in clips if c.id not in row}
        meta.append(f"{spec}: {run.embedded} clips embedded in {run.embed_s:.0f} s ({time.perf_counter() - t0:.0f} s with loading)")
        say("  " + meta[-1])
    kept = [c for c in clips if c.id not in dropped]
    plan = protocol.few_shot_plan([LabelledClip(c.id, c.track, c.tags, c.split) for c in kept], shots=shots,
                                  n_draws=args.draws, seed=args.seed, neg_per_pos=1)  # as `tagstore eval`
    curves = []
    for layout in layouts:
        t0 = time.perf_counter()
        parts = [blocks[b] for b in layout.split(",")]
        row = {c.id: i for i, c in enumerate(kept)}
        X = np.concatenate([p[0][[p[1][c.id] for c in kept]] for p in parts], axis=1)
        lay = Layout(tuple(blk for p in parts for blk in p[2].blocks))
        results = []
        if methods:
            fitted = fit_all({layout: space(layout, X, row, kept, plan)}, plan, methods, False, args.workers, None)
            results = [r for r in fitted[layout].results if r.k is not None]
        results += sklearn_reference(plan, X, row, lay, kept, layout)
        curves += protocol.aggregate(results)
        meta.append(f"{layout}: {X.shape[1]}-d, fits in {time.perf_counter() - t0:.0f} s")
        say("  " + meta[-1])
        for p in protocol.aggregate(results):  # as they come, in case a long run is cut short
            f1 = "" if p.f1_mean is None else f", F1 {p.f1_mean:.3f}"
            say(f"  {p.embedder} {p.method} K={p.k}: {p.ap_mean:.3f} ± {p.ap_std:.3f}{f1}")
    cells = {(p.embedder, p.method, p.k): p for p in curves}
    order = {layout: i for i, layout in enumerate(layouts)}
    print(f"{len(kept)} clips ({len(dropped)} dropped), {len(plan.tags)} tags, {len(plan.eval_ids)} test clips, "
          f"{args.draws} draws, K = {args.shots}; macro AP mean ± std over draws, and macro F1 of the predicted "
          "set at each fit's own threshold (mean over draws)\n")  # fmt: skip
    print("| layout | method | " + " | ".join(f"AP K={k}" for k in shots) + " | "
          + " | ".join(f"F1 K={k}" for k in shots) + " |")  # fmt: skip
    print("|---|---|" + "---:|" * (2 * len(shots)))
    for emb, method in sorted({(p.embedder, p.method) for p in curves}, key=lambda em: (order[em[0]], em[1])):
        vals = [cells.get((emb, method, k)) for k in shots]
        ap = [f"{v.ap_mean:.3f} ± {v.ap_std:.3f}" if v else "" for v in vals]
        f1 = [f"{v.f1_mean:.3f}" if v and v.f1_mean is not None else "" for v in vals]
        print(f"| {emb} | {method} | " + " | ".join(ap + f1) + " |")
    print()
    for line in meta:
        print(f"- {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["build", "eval"])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tagstore" / "realset")
    ap.add_argument("--tunes", type=int, default=40, help="build: tunes per dance type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layouts", default=DEFAULT_LAYOUTS, help="eval: layouts separated by ';', each a spec ('+' or ',' joins blocks)")
    ap.add_argument("--methods", default="probe,prototype,ensemble", help="eval: tagstore's methods ('' for none)")
    ap.add_argument("--shots", default="1,2,5,10,20")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    args.out = args.out.expanduser().absolute()
    build(args) if args.command == "build" else evaluate_layouts(args)


if __name__ == "__main__":
    main()
