"""Styles of the demo corpus: metre, tempo, instrumentation and the rhythm patterns each part plays.

All pattern times are in quarter notes from the start of a bar. A pattern is ``(unit, hits)``: the hits
repeat every ``unit`` quarters until the bar is full, so one pattern serves 2/4 and 4/4 alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from tagstore.corpus import gm

Meter = tuple[int, int]

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor; V chords may raise the 7th (pitch class 11)
DORIAN = (0, 2, 3, 5, 7, 9, 10)  # raga Kafi
HIRAJOSHI = (0, 2, 3, 7, 8)  # a minor-third pentatonic
# Every scale keeps its mode's third: major scales never hold pitch class 3 above the tonic, minor
# scales never hold 4, which is what the label tests check in the MIDI.

# Melody rhythms: whole bars of note lengths in quarters, per metre.
_G = ((1.5,), (1.0, 0.5), (0.5, 0.5, 0.5))  # one dotted-quarter group of a compound metre
BAR_CELLS: dict[Meter, tuple[tuple[float, ...], ...]] = {
    (4, 4): ((4,), (2, 2), (3, 1), (1, 1, 2), (2, 1, 1), (1, 1, 1, 1), (1.5, 0.5, 2),
             (1.5, 0.5, 1, 1), (0.5, 0.5, 1, 1, 1), (1, 0.5, 0.5, 1, 1), (0.5,) * 4 + (2,),
             (1, 0.5, 0.5, 0.5, 0.5, 1), (0.5,) * 8),
    (3, 4): ((3,), (2, 1), (1, 1, 1), (1.5, 0.5, 1), (1, 0.5, 0.5, 1), (1, 1, 0.5, 0.5),
             (2, 0.5, 0.5), (0.5,) * 6),
    (2, 4): ((2,), (1, 1), (0.5, 0.5, 1), (1, 0.5, 0.5), (1.5, 0.5), (0.25, 0.25, 0.5, 1),
             (0.5,) * 4),
    (6, 8): tuple(a + b for a in _G for b in _G) + ((3,),),
    (9, 8): tuple(a + b + c for a in _G for b in _G for c in _G[:2]),
    (5, 4): ((3, 2), (1.5, 1.5, 2), (1, 1, 1, 2), (1.5, 1.5, 1, 1), (0.5,) * 4 + (1, 2),
             (1, 0.5, 0.5, 1, 2)),
}

# Chord progressions: scale degrees (0-based) of the chord root, one chord per bar.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4), (5, 3, 0, 4)),
    "minor": ((0, 3, 4, 0), (0, 5, 2, 6), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 4, 0, 4)),
    "static": ((0, 0, 0, 0),),
    "pentatonic": ((0, 0, 3, 0), (0, 2, 0, 3)),
}

# Chord hits: (onset, length) in quarters.
COMP = {
    "rock8": (0.5, ((0, 0.42),)),
    "waltz": (3, ((1, 0.8), (2, 0.8))),
    "afterbeat": (1, ((0.5, 0.35),)),
    "bossa": (4, ((0, 0.45), (1.5, 0.45), (2.5, 0.45), (3, 0.9))),
    "swing": (4, ((1, 0.6), (3, 0.6))),
    "skank": (2, ((1, 0.3),)),
    "jig": (1.5, ((0, 0.45), (1, 0.45))),
    "reel": (1, ((0, 0.4),)),
    "calypso": (4, ((0, 0.4), (1.5, 0.4), (2, 0.4), (3, 0.9))),
    "five": (5, ((0, 0.9), (1.5, 0.9), (3, 0.9), (4, 0.9))),
    "slip": (1.5, ((0, 1.4),)),
    "bar": (None, ((0, None),)),  # one chord held for the whole bar
    "halves": (2, ((0, 1.9),)),
}
# Arpeggios: (onset, length, index into the chord tones root, third, fifth, octave).
ARP = {
    "arp8": (2, ((0, 0.5, 0), (0.5, 0.5, 1), (1, 0.5, 2), (1.5, 0.5, 3))),
    "alberti": (2, ((0, 0.5, 0), (0.5, 0.5, 2), (1, 0.5, 1), (1.5, 0.5, 2))),
    "sparse": (2, ((0, 1, 0), (1, 0.5, 2), (1.5, 0.5, 3))),
}
# Bass lines: (onset, length, degrees above the chord root); "walk" is composed note by note.
BASS = {
    "root8": (0.5, ((0, 0.45, 0),)),
    "halves": (2, ((0, 1.9, 0),)),
    "waltz": (3, ((0, 0.9, 0),)),
    "march": (2, ((0, 0.9, 0), (1, 0.9, 4))),
    "bossa": (4, ((0, 1.4, 0), (1.5, 0.5, 4), (2, 1.4, 4), (3.5, 0.5, 0))),
    "reggae": (4, ((0, 0.9, 0), (1.5, 0.4, 0), (2.5, 0.4, 4), (3, 0.9, 2))),
    "jig": (1.5, ((0, 1.4, 0),)),
    "calypso": (4, ((0, 1.4, 0), (1.5, 0.4, 0), (2, 1.4, 4), (3.5, 0.4, 4))),
    "five": (5, ((0, 1.4, 0), (1.5, 1.4, 4), (3, 0.9, 0), (4, 0.9, 4))),
    "octave8": (1, ((0, 0.45, 0), (0.5, 0.45, 7))),
    "walk": (None, ()),
}
# Drum kit: (onset, GM percussion key, velocity).
_K, _S, _H = gm.KICK, gm.SNARE, gm.CLOSED_HAT
DRUMS = {
    "rock": (4, ((0, _K, 110), (2, _K, 100), (2.5, _K, 80), (1, _S, 110), (3, _S, 110))
             + tuple((i * 0.5, _H, 80) for i in range(8))),
    "ballad": (4, ((0, _K, 85), (2.5, _K, 70), (1, gm.SIDE_STICK, 80), (3, gm.SIDE_STICK, 80))
               + tuple((i, _H, 55) for i in range(4))),
    "disco": (1, ((0, _K, 110), (0.5, gm.OPEN_HAT, 80))) ,
    "waltz": (3, ((0, _K, 80), (1, _S, 45), (2, _S, 45))),
    "march": (2, ((0, _K, 100), (1, _K, 90), (0, _S, 100), (0.5, _S, 70), (0.75, _S, 70),
                  (1, _S, 95), (1.5, _S, 80))),
    "bossa": (4, ((0, _K, 80), (1.5, _K, 70), (2, _K, 80), (3.5, _K, 70), (0, gm.SIDE_STICK, 80),
                  (1.5, gm.SIDE_STICK, 80), (3, gm.SIDE_STICK, 80))
              + tuple((i * 0.5, gm.MARACAS, 60) for i in range(8))),
    "swing": (4, ((0, gm.RIDE, 90), (1, gm.RIDE, 80), (1.5, gm.RIDE, 60), (2, gm.RIDE, 90),
                  (3, gm.RIDE, 80), (3.5, gm.RIDE, 60), (1, gm.PEDAL_HAT, 70), (3, gm.PEDAL_HAT, 70),
                  (0, _K, 50))),
    "reggae": (4, ((2, _K, 105), (2, gm.SIDE_STICK, 100)) + tuple((i * 0.5, _H, 70) for i in range(8))),
    "polka": (1, ((0, _K, 100), (0.5, _S, 80), (0.5, _H, 70))),
    "bodhran": (1.5, ((0, gm.LOW_TOM, 100), (0.5, gm.MID_TOM, 60), (1, gm.MID_TOM, 70))),
    "tabla": (4, ((0, gm.LOW_CONGA, 100), (0.5, gm.HI_BONGO, 70), (1, gm.MUTE_CONGA, 80),
                  (1.5, gm.HI_BONGO, 70), (2, gm.LOW_BONGO, 90), (2.5, gm.HI_BONGO, 70),
                  (3, gm.OPEN_CONGA, 85), (3.5, gm.HI_BONGO, 60))),
    "calypso": (4, ((0, _K, 100), (1.5, _K, 80), (2, _K, 100), (3.5, _K, 80), (1, _S, 90),
                    (3, _S, 90), (0.5, gm.COWBELL, 60), (2.5, gm.COWBELL, 60))
                + tuple((i * 0.5, _H, 65) for i in range(8))),
    "five": (5, ((0, gm.RIDE, 90), (1, gm.RIDE, 80), (1.5, gm.RIDE, 60), (2, gm.RIDE, 85),
                 (3, gm.RIDE, 85), (4, gm.RIDE, 80), (4.5, gm.RIDE, 60), (0, _K, 70), (3, _K, 60),
                 (1, gm.PEDAL_HAT, 70), (3, gm.PEDAL_HAT, 70))),
}


@dataclass(frozen=True)
class PartSpec:
    """A part a style may have: its role, how likely it is, the pattern it plays and who may play it."""

    role: str  # melody | counter | comp | arp | pad | bass | drone
    p: float
    pattern: str
    choices: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Style:
    """A style: its weight in the corpus, metres, tempo range (quarter-note BPM) and parts."""

    name: str
    weight: float
    meters: tuple[tuple[Meter, float], ...]
    bpm: tuple[int, int]
    p_major: float
    parts: tuple[PartSpec, ...]
    drums: str | None = None
    p_drums: float = 0.0
    swing: bool = False
    density: str = "mid"  # melody note density: low | mid | high
    scales: tuple[tuple[int, ...], tuple[int, ...]] = (MAJOR, MINOR)  # (major, minor)
    progressions: tuple[str, str] = ("major", "minor")


def _c(spec: str) -> tuple[tuple[str, float], ...]:
    """Parse ``"violin:3 flute:1.5"`` into instrument choices, checking each name."""
    out = []
    for item in spec.split():
        name, weight = item.split(":")
        if name not in gm.INSTRUMENTS:
            raise ValueError(f"style names unknown instrument {name!r}")
        out.append((name, float(weight)))
    return tuple(out)


def _p(role: str, p: float, pattern: str, spec: str) -> PartSpec:
    return PartSpec(role, p, pattern, _c(spec))


_M = "melody"
STYLES: dict[str, Style] = {s.name: s for s in (
    Style("rock", 13, (((4, 4), 1),), (96, 168), 0.6, (
        _p(_M, 1, "", "distortion_guitar:3 electric_guitar:3 synth_lead:1.5 organ:1 alto_sax:0.7"),
        _p("comp", 0.9, "rock8", "distortion_guitar:3 electric_guitar:2 organ:1 piano:1"),
        _p("bass", 1, "root8", "electric_bass:5 synth_bass:0.6"),
    ), drums="rock", p_drums=1),
    Style("ballad", 12, (((4, 4), 1),), (58, 88), 0.55, (
        _p(_M, 1, "", "flute:2 violin:1.5 alto_sax:1 electric_piano:1 piano:1.5 clarinet:1 oboe:0.7 "
           "french_horn:0.7 cello:0.7 choir:0.5 synth_lead:0.4 pan_flute:0.4"),
        _p("arp", 0.9, "arp8", "piano:4 acoustic_guitar:2 harp:1.2 electric_piano:1.5 nylon_guitar:1"),
        _p("pad", 0.6, "bar", "string_ensemble:3 synth_pad:2 choir:0.5 organ:0.5"),
        _p("bass", 0.7, "halves", "electric_bass:2 acoustic_bass:1 contrabass:0.5"),
    ), drums="ballad", p_drums=0.5, density="low"),
    Style("waltz", 10, (((3, 4), 1),), (72, 176), 0.65, (
        _p(_M, 1, "", "violin:3 accordion:2 flute:1.5 clarinet:1 piano:1 trumpet:0.5 xylophone:0.3 "
           "glockenspiel:0.3"),
        _p("comp", 1, "waltz", "piano:2 string_ensemble:2 accordion:1.5 harp:0.5 pizzicato_strings:1"),
        _p("bass", 0.85, "waltz", "contrabass:1.5 acoustic_bass:1 tuba:1 cello:0.7"),
    ), drums="waltz", p_drums=0.15),
    Style("march", 8, (((2, 4), 0.6), ((4, 4), 0.4)), (100, 136), 0.8, (
        _p(_M, 1, "", "trumpet:3 piccolo:1.5 flute:1 clarinet:1.5 french_horn:1 glockenspiel:0.4 "
           "xylophone:0.3"),
        _p("counter", 0.5, "", "trombone:2 french_horn:1.5 alto_sax:1 clarinet:1"),
        _p("comp", 0.8, "afterbeat", "brass_section:2 french_horn:1 trombone:1 accordion:0.3"),
        _p("bass", 1, "march", "tuba:4 trombone:1 bassoon:0.5"),
    ), drums="march", p_drums=1),
    Style("bossa", 7, (((4, 4), 1),), (112, 148), 0.55, (
        _p(_M, 1, "", "flute:2 alto_sax:1.3 tenor_sax:1.3 vibraphone:1 electric_piano:1 trumpet:0.6 "
           "nylon_guitar:0.5 marimba:0.3"),
        _p("comp", 1, "bossa", "nylon_guitar:5 electric_piano:1.5 piano:1"),
        _p("bass", 0.9, "bossa", "acoustic_bass:3 electric_bass:1"),
    ), drums="bossa", p_drums=0.85),
    Style("swing", 8, (((4, 4), 1),), (96, 200), 0.7, (
        _p(_M, 1, "", "tenor_sax:2 alto_sax:2 trumpet:2 clarinet:1 vibraphone:1 trombone:1 piano:0.7 "
           "jazz_guitar:0.6"),
        _p("counter", 0.2, "", "trombone:1 tenor_sax:1"),
        _p("comp", 1, "swing", "piano:3 jazz_guitar:1.5 vibraphone:0.5 electric_piano:0.5"),
        _p("bass", 1, "walk", "acoustic_bass:4 contrabass:1"),
    ), drums="swing", p_drums=0.9, swing=True),
    Style("reggae", 5, (((4, 4), 1),), (64, 98), 0.5, (
        _p(_M, 1, "", "trumpet:1 alto_sax:1 trombone:1 synth_lead:1 organ:0.8 electric_guitar:0.5"),
        _p("comp", 1, "skank", "electric_guitar:3 organ:2 piano:1"),
        _p("bass", 1, "reggae", "electric_bass:4 synth_bass:1"),
    ), drums="reggae", p_drums=1, density="low"),
    Style("jig", 6, (((6, 8), 1),), (150, 196), 0.65, (
        _p(_M, 1, "", "fiddle:4 flute:2 accordion:1.5 recorder:1 banjo:0.7 bagpipe:0.8"),
        _p("comp", 0.85, "jig", "acoustic_guitar:2 piano:2 nylon_guitar:0.5 banjo:0.5 harp:0.4"),
        _p("bass", 0.25, "jig", "acoustic_bass:1"),
    ), drums="bodhran", p_drums=0.3, density="high"),
    Style("reel", 5, (((4, 4), 1),), (140, 196), 0.6, (
        _p(_M, 1, "", "fiddle:4 flute:2 accordion:1.5 recorder:0.7 banjo:0.7 bagpipe:0.8"),
        _p("comp", 0.85, "reel", "acoustic_guitar:2 piano:2 banjo:0.4"),
        _p("bass", 0.25, "halves", "acoustic_bass:1"),
    ), drums="bodhran", p_drums=0.3, density="high"),
    Style("chorale", 5, (((4, 4), 1),), (56, 84), 0.6, (
        _p(_M, 1, "", "church_organ:2 choir:2 trumpet:1 oboe:1 string_ensemble:1 french_horn:0.7 "
           "brass_section:0.7"),
        _p("pad", 1, "halves", "church_organ:3 choir:2 string_ensemble:2 brass_section:1.5 organ:0.5 "
           "harmonium:0.5"),
        _p("bass", 0.8, "halves", "church_organ:1.5 contrabass:1 tuba:0.7 bassoon:0.7 cello:1"),
    ), density="low"),
    Style("polka", 3, (((2, 4), 1),), (132, 176), 0.85, (
        _p(_M, 1, "", "accordion:3 clarinet:2 trumpet:1.5 violin:0.5"),
        _p("comp", 1, "afterbeat", "accordion:2 piano:1 brass_section:0.5"),
        _p("bass", 1, "march", "tuba:4 acoustic_bass:1"),
    ), drums="polka", p_drums=0.7),
    Style("synthpop", 5, (((4, 4), 1),), (104, 134), 0.55, (
        _p(_M, 1, "", "synth_lead:4 electric_piano:1 vibraphone:0.5 marimba:0.4"),
        _p("pad", 0.8, "bar", "synth_pad:4 string_ensemble:1"),
        _p("arp", 0.5, "arp8", "electric_piano:1 marimba:0.5 glockenspiel:0.3"),
        _p("bass", 1, "octave8", "synth_bass:4 electric_bass:1"),
    ), drums="disco", p_drums=1),
    # The long tail: styles (and the instruments and metres only they use) on about 1.5% of tracks.
    Style("minuet", 1.4, (((3, 4), 1),), (92, 124), 0.75, (
        _p(_M, 1, "", "harpsichord:2 oboe:1 flute:1 violin:1"),
        _p("arp", 1, "alberti", "harpsichord:1"),
        _p("bass", 0.6, "waltz", "cello:1 bassoon:1"),
    )),
    Style("raga", 1.4, (((4, 4), 1),), (66, 110), 0.4, (
        _p(_M, 1, "", "sitar:4 shanai:1"),
        _p("arp", 0.4, "sparse", "sitar:1"),
        _p("drone", 1, "", "harmonium:2 string_ensemble:1"),
    ), drums="tabla", p_drums=0.75, scales=(MAJOR, DORIAN), progressions=("static", "static")),
    Style("calypso", 1.4, (((4, 4), 1),), (104, 140), 0.85, (
        _p(_M, 1, "", "steel_drums:1"),
        _p("comp", 0.8, "calypso", "acoustic_guitar:1.5 piano:1 marimba:0.5"),
        _p("bass", 1, "calypso", "electric_bass:2 acoustic_bass:1"),
    ), drums="calypso", p_drums=0.8),
    Style("odd_meter", 1.4, (((5, 4), 1),), (132, 184), 0.4, (
        _p(_M, 1, "", "alto_sax:3 tenor_sax:1 piano:1 vibraphone:1 trumpet:0.7"),
        _p("comp", 1, "five", "piano:3 jazz_guitar:1 vibraphone:0.5"),
        _p("bass", 1, "five", "acoustic_bass:1"),
    ), drums="five", p_drums=0.9, swing=True),
    Style("slip_jig", 1.4, (((9, 8), 1),), (150, 196), 0.5, (
        _p(_M, 1, "", "fiddle:3 flute:2 bagpipe:2 recorder:0.5 accordion:0.5"),
        _p("comp", 0.85, "slip", "acoustic_guitar:2 piano:1.5 harp:0.5"),
    ), drums="bodhran", p_drums=0.25, density="high"),
    Style("japanese", 1.4, (((4, 4), 1),), (56, 88), 0.0, (
        _p(_M, 1, "", "koto:2 shakuhachi:1.5 shamisen:1.5"),
        _p("arp", 0.8, "sparse", "koto:2 shamisen:1 harp:0.3"),
    ), density="low", scales=(MAJOR, HIRAJOSHI), progressions=("pentatonic", "pentatonic")),
)}

TEMPO_BANDS = (("slow", 0, 90), ("medium", 90, 130), ("fast", 130, 1000))
"""Tempo tags by quarter-note BPM: ``lo <= bpm < hi``."""


def tempo_band(bpm: float) -> str:
    """The tempo tag (slow, medium, fast) of a quarter-note tempo in BPM."""
    for name, lo, hi in TEMPO_BANDS:
        if lo <= bpm < hi:
            return name
    raise ValueError(f"tempo {bpm} BPM is outside every band")


def meter_tag(meter: Meter) -> str:
    """The metre tag of a time signature, e.g. ``time_6_8``."""
    return f"time_{meter[0]}_{meter[1]}"


def bar_quarters(meter: Meter) -> float:
    """Length of one bar in quarter notes."""
    return meter[0] * 4 / meter[1]
