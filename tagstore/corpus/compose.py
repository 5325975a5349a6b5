"""Composing a planned clip as MIDI (pretty_midi): melody, counter-melody, chords, arpeggios, bass,
drone and drum kit, in the clip's metre, key, tempo and register.

The MIDI file carries the facts the tags claim: tempo, time signature, key signature (pretty_midi key
numbers: 0-11 major, 12-23 minor), one GM program per melodic part and the drum kit on channel 10.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from tagstore.corpus import gm
from tagstore.corpus.plan import ClipPlan, Part
from tagstore.corpus.styles import ARP, BAR_CELLS, BASS, COMP, DRUMS, bar_quarters

if TYPE_CHECKING:
    import pretty_midi

_DENSITY = {"low": (1.0, 9.0), "mid": (0.5, 1.5), "high": (0.0, 0.75)}  # mean note length, quarters


def _import_pretty_midi():
    try:
        import pretty_midi
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from tagstore.errors import MissingDependencyError

        raise MissingDependencyError(
            "the demo corpus needs pretty_midi: pip install 'tagstore[corpus]'") from exc
    return pretty_midi


class _Clip:
    """Composition state of one clip: timing, harmony and the notes written so far."""

    def __init__(self, clip: ClipPlan) -> None:
        self.c = clip
        self.rng = np.random.default_rng(clip.seed)
        self.q = 60.0 / clip.bpm  # seconds per quarter note
        self.bar = bar_quarters(clip.meter)
        self.n_bars = math.ceil(clip.clip_s / (self.bar * self.q) - 1e-9)
        self.notes: dict[int, list[tuple[float, float, int, int]]] = {}

    def chord_root(self, bar: int) -> int:
        return self.c.progression[bar % len(self.c.progression)]

    def scale_for(self, bar: int) -> tuple[int, ...]:
        # Minor keys with `harmonic`: the V chord (root on degree 4) gets the raised 7th.
        scale = self.c.scale
        if self.c.harmonic and self.c.mode == "minor" and len(scale) == 7 and scale[6] == 10 \
                and self.chord_root(bar) == 4:
            return scale[:6] + (11,)
        return scale

    def pitch(self, degree: int, base: int, bar: int) -> int:
        scale = self.scale_for(bar)
        return base + scale[degree % len(scale)] + 12 * (degree // len(scale))

    def base(self, part: Part, offset: int = 0) -> int:
        """MIDI pitch of the tonic nearest the part's chosen centre (range middle + register)."""
        inst = gm.INSTRUMENTS[part.instrument]
        centre = (inst.low + inst.high) // 2 + part.register + offset
        return centre - ((centre - self.c.tonic) % 12)

    def fits(self, part: Part, pitch: int) -> bool:
        inst = gm.INSTRUMENTS[part.instrument]
        return inst.low <= pitch <= inst.high

    def swing(self, onset: float) -> float:
        frac = onset % 1.0
        return onset + 1 / 6 if self.c.swing and abs(frac - 0.5) < 1e-9 else onset

    def add(self, key: int, onset_q: float, length_q: float, pitch: int, velocity: int) -> None:
        start = self.swing(onset_q) * self.q
        end = min(start + length_q * self.q, self.c.clip_s)
        if start < self.c.clip_s - 0.05 and end > start:
            vel = int(np.clip(velocity + self.rng.integers(-6, 7), 1, 127))
            self.notes.setdefault(key, []).append((start, end, int(pitch), vel))

    def tiles(self, unit: float | None):
        """Bar offsets at which a pattern of ``unit`` quarters starts, over the whole clip."""
        for bar in range(self.n_bars):
            step = unit or self.bar
            k = 0
            while k * step < self.bar - 1e-9:
                yield bar, bar * self.bar + k * step, k * step
                k += 1


def _melody(s: _Clip, key: int, part: Part) -> list[int]:
    """A phrase-shaped melody; returns its degree sequence so a counter-melody can shadow it."""
    lo, hi = _DENSITY[s.c.density]
    cells = [c for c in BAR_CELLS[s.c.meter] if lo <= s.bar / len(c) <= hi] or list(BAR_CELLS[s.c.meter])
    motif = [cells[int(s.rng.integers(len(cells)))] for _ in range(2)]
    base, deg, degrees = s.base(part), 0, []
    s.rhythm = []  # (onset, length) of each melody note, shared with the counter-melody
    for bar in range(s.n_bars):
        cell = motif[bar % 2] if s.rng.random() < 0.75 else cells[int(s.rng.integers(len(cells)))]
        t = bar * s.bar
        for i, length in enumerate(cell):
            if i == 0:  # strong beat: the chord tone nearest the previous note
                root = s.chord_root(bar)
                options = [root + k + 7 * o for k in (0, 2, 4) for o in (-2, -1, 0, 1)]
                deg = min(options, key=lambda d: (abs(d - deg), d))
            else:
                deg += int(s.rng.choice([-2, -1, -1, 1, 1, 2, 0, 3, -3]))
            while not s.fits(part, s.pitch(deg, base, bar)):
                deg += 7 if s.pitch(deg, base, bar) < gm.INSTRUMENTS[part.instrument].low else -7
            if i == 0 or s.rng.random() > 0.08:
                s.add(key, t, length * 0.92, s.pitch(deg, base, bar), part.velocity + 8 * (i == 0))
                s.rhythm.append((t, length * 0.92, bar))
                degrees.append(deg)
            t += length
    return degrees


def _counter(s: _Clip, key: int, part: Part, degrees: list[int]) -> None:
    base = s.base(part)
    for (t, length, bar), deg in zip(s.rhythm, degrees):
        d = deg - 2  # a third below the melody, in the counter instrument's own register
        p = s.pitch(d, base, bar)
        while not s.fits(part, p):
            d += 7 if p < gm.INSTRUMENTS[part.instrument].low else -7
            p = s.pitch(d, base, bar)
        s.add(key, t, length, p, part.velocity - 10)


def _voices(s: _Clip, part: Part, bar: int, tones: tuple[int, ...], offset: int = -5) -> list[int]:
    base, root = s.base(part, offset), s.chord_root(bar)
    out = []
    for k in tones:
        p = s.pitch(root + k, base, bar)
        while not s.fits(part, p):
            p += 12 if p < gm.INSTRUMENTS[part.instrument].low else -12
        out.append(p)
    return out


def _chords(s: _Clip, key: int, part: Part) -> None:
    unit, hits = COMP[part.pattern]
    power = part.instrument == "distortion_guitar"
    tones = (0, 4, 7) if power else (-7, 0, 2, 4) if part.role == "pad" and part.pattern == "halves" \
        else (0, 2, 4)
    for bar, t0, _ in s.tiles(unit):
        for onset, length in hits:
            for p in _voices(s, part, bar, tones):
                s.add(key, t0 + onset, length if length is not None else s.bar * 0.98, p,
                      part.velocity - 15)


def _arp(s: _Clip, key: int, part: Part) -> None:
    unit, hits = ARP[part.pattern]
    for bar, t0, _ in s.tiles(unit):
        voices = _voices(s, part, bar, (0, 2, 4, 7), offset=-7)
        for onset, length, idx in hits:
            s.add(key, t0 + onset, length, voices[idx], part.velocity - 12)


def _bass(s: _Clip, key: int, part: Part) -> None:
    if part.pattern == "walk":
        for bar in range(s.n_bars):
            nxt = s.chord_root(bar + 1)
            line = [0, 2, 4] + [nxt - s.chord_root(bar) + int(s.rng.choice([-1, 1]))]
            beats = int(s.bar)
            for beat in range(beats):
                p = _voices(s, part, bar, (line[min(beat, 3)],), offset=-30)[0]
                s.add(key, bar * s.bar + beat, 0.9, p, part.velocity)
        return
    unit, hits = BASS[part.pattern]
    for bar, t0, _ in s.tiles(unit):
        for onset, length, tone in hits:
            tone = 4 if part.pattern == "waltz" and bar % 2 else tone
            p = _voices(s, part, bar, (tone,), offset=-30)[0]
            s.add(key, t0 + onset, length, p, part.velocity)


def _drone(s: _Clip, key: int, part: Part) -> None:
    base = s.base(part, -7)
    for bar in range(0, s.n_bars, 2):
        for p in (base, base + 7):
            s.add(key, bar * s.bar, 2 * s.bar, p, part.velocity - 20)


def _drums(s: _Clip, key: int) -> None:
    unit, hits = DRUMS[s.c.drums]
    for bar, t0, _ in s.tiles(unit):
        for onset, note, vel in hits:
            if t0 + onset < (bar + 1) * s.bar - 1e-9:
                s.add(key, t0 + onset, 0.25, note, vel + s.c.drum_velocity)
    if s.c.drums in ("rock", "disco", "calypso"):
        s.add(key, 0, 1, gm.CRASH, 100 + s.c.drum_velocity)


def compose(clip: ClipPlan) -> "pretty_midi.PrettyMIDI":
    """Compose ``clip`` as a PrettyMIDI object (deterministic from ``clip.seed``); notes end by clip_s."""
    pm_mod = _import_pretty_midi()
    s = _Clip(clip)
    degrees: list[int] = []
    for i, part in enumerate(clip.parts):  # the melody comes first in every style
        if part.role == "melody":
            degrees = _melody(s, i, part)
        elif part.role == "counter":
            _counter(s, i, part, degrees)
        elif part.role in ("comp", "pad"):
            _chords(s, i, part)
        elif part.role == "arp":
            _arp(s, i, part)
        elif part.role == "bass":
            _bass(s, i, part)
        elif part.role == "drone":
            _drone(s, i, part)
        else:
            raise ValueError(f"unknown part role {part.role!r}")
    if clip.drums:
        _drums(s, -1)
    silent = [p.instrument for i, p in enumerate(clip.parts) if not s.notes.get(i)]
    if silent or (clip.drums and not s.notes.get(-1)):  # a tag must never name a silent part
        raise ValueError(f"clip {clip.clip_id}: no notes for {silent or 'drums'} in {clip.clip_s} s")
    pm = pm_mod.PrettyMIDI(initial_tempo=float(clip.bpm))
    pm.time_signature_changes.append(pm_mod.TimeSignature(clip.meter[0], clip.meter[1], 0.0))
    pm.key_signature_changes.append(
        pm_mod.KeySignature(clip.tonic + (12 if clip.mode == "minor" else 0), 0.0))
    for i, part in enumerate(clip.parts):
        inst = pm_mod.Instrument(program=gm.INSTRUMENTS[part.instrument].program, name=part.role)
        inst.control_changes.append(pm_mod.ControlChange(91, part.reverb, 0.0))
        inst.notes = [pm_mod.Note(v, p, a, b) for a, b, p, v in sorted(s.notes.get(i, []))]
        pm.instruments.append(inst)
    if clip.drums:
        kit = pm_mod.Instrument(program=0, is_drum=True, name="drums")
        kit.notes = [pm_mod.Note(v, p, a, b) for a, b, p, v in sorted(s.notes.get(-1, []))]
        pm.instruments.append(kit)
    return pm


def midi_bytes(clip: ClipPlan) -> bytes:
    """The clip's Standard MIDI File (type 1) as bytes."""
    buf = io.BytesIO()
    compose(clip).write(buf)
    return buf.getvalue()
