"""Planning the demo corpus: tracks, clips, their exact tags and the train/test split, without audio.

A *track* is one composition (style, metre, mode, instrumentation, tempo band); it yields one to three
*clips*: different sections (melody, progression, key) and renders (tempo nudge, mix, loudness) of it.
Every clip of a track carries the same tags, and the split is made by track.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from tagstore.corpus import gm
from tagstore.corpus.styles import (
    PROGRESSIONS, STYLES, TEMPO_BANDS, Meter, Style, meter_tag, tempo_band,
)

CLIPS_PER_TRACK = ((1, 0.3), (2, 0.45), (3, 0.25))


@dataclass(frozen=True)
class Part:
    """One instrument part of a clip: role, instrument tag, pattern and mix (velocity, reverb)."""

    role: str
    instrument: str
    pattern: str
    velocity: int  # base MIDI velocity, 1..127
    register: int  # semitones from the middle of the instrument's range
    reverb: int  # GM controller 91, 0..127


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to compose, render and label one clip; ``tags`` are exact by construction."""

    clip_id: str
    track: str
    section: int
    style: str
    meter: Meter
    bpm: int  # quarter notes per minute
    tonic: int  # pitch class 0..11 (0 = C)
    mode: str  # major | minor
    scale: tuple[int, ...]
    progression: tuple[int, ...]
    harmonic: bool  # minor keys: V chords raise the 7th
    parts: tuple[Part, ...]
    drums: str | None  # drum pattern name, or None for no drum kit
    drum_velocity: int
    swing: bool
    density: str
    seed: int
    loudness_db: float  # target RMS of the rendered clip, dBFS
    clip_s: float
    tags: tuple[str, ...]
    split: str = ""

    def audio_name(self, ext: str = "wav") -> str:
        """Path of the clip's audio, relative to labels.csv."""
        return f"audio/{self.clip_id}.{ext}"

    @property
    def midi_name(self) -> str:
        """Path of the clip's MIDI file, relative to labels.csv."""
        return f"midi/{self.clip_id}.mid"


@dataclass(frozen=True)
class CorpusPlan:
    """A planned corpus: clips in id order, with their split."""

    seed: int
    clips: tuple[ClipPlan, ...]

    @property
    def tracks(self) -> tuple[str, ...]:
        return tuple(sorted({c.track for c in self.clips}))

    def tag_counts(self) -> dict[str, int]:
        """Clips per tag, most frequent first (ties by name)."""
        counts = Counter(t for c in self.clips for t in c.tags)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def clip_tags(style: Style, meter: Meter, bpm: float, mode: str, parts: tuple[Part, ...],
              drums: bool) -> tuple[str, ...]:
    """The tags of a clip, sorted: style, metre, tempo band, mode, drums, instruments, families."""
    tags = {style.name, meter_tag(meter), tempo_band(bpm), mode}
    for part in parts:
        inst = gm.INSTRUMENTS[part.instrument]
        tags.add(inst.name)
        tags.update(inst.families)
    if drums:
        tags.update((gm.DRUMS_TAG, gm.DRUM_FAMILY))
    return tuple(sorted(tags))


def all_tags() -> tuple[str, ...]:
    """Every tag the corpus can give, sorted."""
    tags = set(STYLES) | set(gm.INSTRUMENTS) | set(gm.FAMILIES) | {gm.DRUMS_TAG, gm.DRUM_FAMILY}
    tags |= {meter_tag(m) for s in STYLES.values() for m, _ in s.meters}
    tags |= {name for name, _, _ in TEMPO_BANDS} | {"major", "minor"}
    return tuple(sorted(tags))


def _pick(rng: np.random.Generator, choices) -> object:
    items = [c for c, _ in choices]
    w = np.array([w for _, w in choices], dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _quota(weights: dict[str, float], n: int) -> list[str]:
    """Largest-remainder allocation of ``n`` slots to names by weight (deterministic)."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), -weights[k], k))
    for k in rest[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in weights for _ in range(counts[k])]


def _band_limits(bpm: int) -> tuple[int, int]:
    for _, lo, hi in TEMPO_BANDS:
        if lo <= bpm < hi:
            return lo, hi - 1
    raise ValueError(bpm)


def _plan_track(rng: np.random.Generator, style: Style, track: str, n_clips: int,
                clip_s: float) -> list[ClipPlan]:
    meter = _pick(rng, style.meters)
    mode = "major" if rng.random() < style.p_major else "minor"
    scale = style.scales[0] if mode == "major" else style.scales[1]
    prog_kind = style.progressions[0] if mode == "major" else style.progressions[1]
    bpm = int(rng.integers(style.bpm[0], style.bpm[1] + 1))
    parts = []
    for spec in style.parts:
        if rng.random() < spec.p:
            parts.append(Part(spec.role, str(_pick(rng, spec.choices)), spec.pattern,
                              velocity=int(rng.integers(70, 111)),
                              register=int(rng.integers(-5, 6)), reverb=int(rng.integers(0, 81))))
    has_drums = style.drums is not None and rng.random() < style.p_drums
    tags = clip_tags(style, meter, bpm, mode, tuple(parts), has_drums)
    tonic = int(rng.integers(0, 12))
    lo, hi = _band_limits(bpm)
    progs = PROGRESSIONS[prog_kind]
    clips = []
    for section in range(n_clips):
        # Later sections: another progression, maybe another key of the same mode, a nudged tempo
        # that stays in the band, a remixed balance and loudness.
        key = tonic if section == 0 or rng.random() < 0.6 else (tonic + int(rng.choice([5, 7]))) % 12
        mix = tuple(replace(p, velocity=int(np.clip(p.velocity + rng.integers(-12, 13), 40, 127)))
                    for p in parts) if section else tuple(parts)
        clips.append(ClipPlan(
            clip_id=f"{track}_{section}", track=track, section=section, style=style.name,
            meter=meter, bpm=int(np.clip(bpm + rng.integers(-3, 4) * (section > 0), lo, hi)),
            tonic=key, mode=mode, scale=scale, progression=progs[int(rng.integers(len(progs)))],
            harmonic=bool(rng.random() < 0.5), parts=mix, drums=style.drums if has_drums else None,
            drum_velocity=int(rng.integers(-15, 11)), swing=style.swing, density=style.density,
            seed=int(rng.integers(2**31)), loudness_db=float(np.round(rng.uniform(-30, -16), 2)),
            clip_s=clip_s, tags=tags))
    return clips


def plan_corpus(n_clips: int = 400, seed: int = 0, clip_s: float = 10.0,
                test_fraction: float = 0.3) -> CorpusPlan:
    """Plan ``n_clips`` clips (tracks, tags, split) deterministically from ``seed``; no audio, no MIDI.

    Styles are allotted to tracks by largest remainder of their weights, so the long tail (styles,
    metres and instruments on about 1.5% of clips) is there at every seed once ``n_clips`` ≳ 150.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be at least 1, got {n_clips}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A65]))
    sizes: list[int] = []
    while sum(sizes) < n_clips:
        sizes.append(int(_pick(rng, CLIPS_PER_TRACK)))
    sizes[-1] -= sum(sizes) - n_clips
    styles = _quota({k: s.weight for k, s in STYLES.items()}, len(sizes))
    rng.shuffle(styles)
    clips: list[ClipPlan] = []
    for i, (name, size) in enumerate(zip(styles, sizes)):
        clips += _plan_track(rng, STYLES[name], f"t{i:04d}", size, clip_s)
    split = split_by_track(clips, test_fraction, seed)
    clips = [replace(c, split=split[c.track]) for c in clips]
    return CorpusPlan(seed, tuple(sorted(clips, key=lambda c: c.clip_id)))


def split_by_track(clips: list[ClipPlan], test_fraction: float, seed: int) -> dict[str, str]:
    """Assign each track to ``train`` or ``test``: iterative stratification over tracks.

    Rarest tags are placed first, each track going to the split that still lacks the most clips of that
    tag (Sechidis et al. 2011, by group); a final pass moves one track where a tag held by two or more
    tracks would otherwise sit in one split only. Returns track → split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B17]))
    size = Counter(c.track for c in clips)
    tags = {c.track: set(c.tags) for c in clips}
    n = sum(size.values())
    want = {"test": test_fraction * n, "train": (1 - test_fraction) * n}
    tag_clips = Counter(t for c in clips for t in c.tags)
    want_tag = {s: {t: k * (test_fraction if s == "test" else 1 - test_fraction)
                    for t, k in tag_clips.items()} for s in want}
    left = sorted(size)
    rng.shuffle(left)
    out: dict[str, str] = {}
    while left:
        remaining = Counter(t for tr in left for t in tags[tr])
        tag = min(remaining, key=lambda t: (remaining[t], t))
        for tr in [tr for tr in left if tag in tags[tr]]:
            split = max(want, key=lambda s: (want_tag[s][tag], want[s]))
            out[tr] = split
            want[split] -= size[tr]
            for t in tags[tr]:
                want_tag[split][t] -= size[tr]
            left.remove(tr)
    _spread_rare(out, tags, size)
    return out


def _spread_rare(out: dict[str, str], tags: dict[str, set[str]], size: Counter) -> None:
    """Move single tracks so that every tag held by two or more tracks is in both splits."""
    for tag in sorted({t for ts in tags.values() for t in ts}):
        holders = sorted(tr for tr in out if tag in tags[tr])
        if len(holders) < 2 or len({out[tr] for tr in holders}) == 2:
            continue
        have = out[holders[0]]
        other = "test" if have == "train" else "train"
        # Move the smallest track whose other tags all stay present in the split it leaves.
        for tr in sorted(holders, key=lambda tr: (size[tr], tr)):
            rest = [x for x in out if x != tr and out[x] == have]
            if all(any(t in tags[x] for x in rest) for t in tags[tr]):
                out[tr] = other
                break
