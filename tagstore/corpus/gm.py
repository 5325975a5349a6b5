"""General MIDI facts the demo corpus is built from: instrument tags, their families, drum keys.

Every melodic instrument tag names exactly one GM program (0-based, as ``pretty_midi`` numbers them), so a
clip's instrument tags can be read back from its MIDI file: the programs of its non-drum parts. The drum
kit (channel 10, ``is_drum``) only ever yields the ``drums`` tag and the ``percussion`` family.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    """One melodic instrument tag: its GM program (0-based), families and playable range (MIDI pitches)."""

    name: str
    program: int
    families: tuple[str, ...]
    low: int
    high: int


_TABLE: tuple[tuple[str, int, str, int, int], ...] = (
    # name, program, families (space-separated), lowest, highest MIDI pitch used
    ("piano", 0, "keys", 36, 96),
    ("electric_piano", 4, "keys", 40, 88),
    ("harpsichord", 6, "keys", 36, 88),
    ("glockenspiel", 9, "mallets percussion", 72, 100),
    ("vibraphone", 11, "mallets percussion", 53, 89),
    ("marimba", 12, "mallets percussion", 45, 96),
    ("xylophone", 13, "mallets percussion", 65, 100),
    ("organ", 16, "keys", 36, 91),
    ("church_organ", 19, "keys", 24, 91),
    ("harmonium", 20, "keys", 41, 84),
    ("accordion", 21, "keys", 41, 89),
    ("nylon_guitar", 24, "guitar plucked", 40, 81),
    ("acoustic_guitar", 25, "guitar plucked", 40, 81),
    ("jazz_guitar", 26, "guitar", 40, 81),
    ("electric_guitar", 27, "guitar", 40, 84),
    ("distortion_guitar", 30, "guitar", 40, 84),
    ("acoustic_bass", 32, "bass", 28, 55),
    ("electric_bass", 33, "bass", 28, 60),
    ("synth_bass", 38, "bass synth", 28, 60),
    ("violin", 40, "strings", 55, 93),
    ("cello", 42, "strings", 36, 72),
    ("contrabass", 43, "strings bass", 28, 55),
    ("pizzicato_strings", 45, "strings plucked", 36, 84),
    ("harp", 46, "strings plucked", 36, 91),
    ("string_ensemble", 48, "strings", 36, 91),
    ("choir", 52, "voice", 45, 79),
    ("trumpet", 56, "brass", 55, 82),
    ("trombone", 57, "brass", 40, 70),
    ("tuba", 58, "brass", 28, 55),
    ("french_horn", 60, "brass", 41, 77),
    ("brass_section", 61, "brass", 45, 80),
    ("alto_sax", 65, "woodwind saxophone", 49, 80),
    ("tenor_sax", 66, "woodwind saxophone", 44, 75),
    ("oboe", 68, "woodwind", 58, 89),
    ("bassoon", 70, "woodwind", 34, 67),
    ("clarinet", 71, "woodwind", 50, 89),
    ("piccolo", 72, "woodwind", 74, 102),
    ("flute", 73, "woodwind", 60, 96),
    ("recorder", 74, "woodwind", 60, 91),
    ("pan_flute", 75, "woodwind ethnic", 60, 91),
    ("shakuhachi", 77, "woodwind ethnic", 55, 86),
    ("synth_lead", 81, "synth", 48, 96),
    ("synth_pad", 89, "synth", 36, 84),
    ("sitar", 104, "plucked ethnic", 48, 84),
    ("banjo", 105, "plucked", 48, 84),
    ("shamisen", 106, "plucked ethnic", 50, 86),
    ("koto", 107, "plucked ethnic", 48, 91),
    ("bagpipe", 109, "woodwind ethnic", 55, 81),
    ("fiddle", 110, "strings", 55, 93),
    ("shanai", 111, "woodwind ethnic", 55, 86),
    ("steel_drums", 114, "percussion ethnic", 52, 88),
)

INSTRUMENTS: dict[str, Instrument] = {
    name: Instrument(name, program, tuple(fams.split()), low, high)
    for name, program, fams, low, high in _TABLE
}
"""Instrument tag → :class:`Instrument`."""

BY_PROGRAM: dict[int, Instrument] = {inst.program: inst for inst in INSTRUMENTS.values()}
"""GM program (0-based) → :class:`Instrument`; the inverse of the tag table."""

FAMILIES: tuple[str, ...] = tuple(
    sorted({f for inst in INSTRUMENTS.values() for f in inst.families})
)
"""Every family tag an instrument can give (the drum kit adds ``percussion``)."""

DRUMS_TAG = "drums"
DRUM_FAMILY = "percussion"

# GM percussion keys (channel 10) used by the drum patterns.
KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
LOW_TOM, CLOSED_HAT, MID_TOM, PEDAL_HAT, HIGH_TOM, OPEN_HAT = 45, 42, 47, 44, 50, 46
CRASH, RIDE, COWBELL = 49, 51, 56
HI_BONGO, LOW_BONGO, MUTE_CONGA, OPEN_CONGA, LOW_CONGA, MARACAS = 60, 61, 62, 63, 64, 70
