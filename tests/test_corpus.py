"""The demo corpus: determinism, labels checked against the MIDI itself, long tail, split by track."""

from __future__ import annotations

import io
from collections import Counter, defaultdict

import numpy as np
import pytest

pretty_midi = pytest.importorskip("pretty_midi", reason="the demo corpus needs the 'corpus' extra")
pytest.importorskip("midirenderer", reason="the demo corpus needs the 'corpus' extra")

from tagstore.evaluation.labels import LabelRow, read_labels  # noqa: E402
from tagstore.corpus import (  # noqa: E402
    all_tags, labels_csv_text, make_corpus, plan_corpus,
)
from tagstore.corpus import gm  # noqa: E402
from tagstore.corpus.compose import midi_bytes  # noqa: E402
from tagstore.errors import InputError  # noqa: E402

# The General MIDI program (0-based) of each instrument tag, written out from the GM 1 sound set so the
# label test does not trust the module's own table.
GM = {
    "piano": 0, "electric_piano": 4, "harpsichord": 6, "glockenspiel": 9, "vibraphone": 11,
    "marimba": 12, "xylophone": 13, "organ": 16, "church_organ": 19, "harmonium": 20, "accordion": 21,
    "nylon_guitar": 24, "acoustic_guitar": 25, "jazz_guitar": 26, "electric_guitar": 27,
    "distortion_guitar": 30, "acoustic_bass": 32, "electric_bass": 33, "synth_bass": 38, "violin": 40,
    "cello": 42, "contrabass": 43, "pizzicato_strings": 45, "harp": 46, "string_ensemble": 48,
    "choir": 52, "trumpet": 56, "trombone": 57, "tuba": 58, "french_horn": 60, "brass_section": 61,
    "alto_sax": 65, "tenor_sax": 66, "oboe": 68, "bassoon": 70, "clarinet": 71, "piccolo": 72,
    "flute": 73, "recorder": 74, "pan_flute": 75, "shakuhachi": 77, "synth_lead": 81, "synth_pad": 89,
    "sitar": 104, "banjo": 105, "shamisen": 106, "koto": 107, "bagpipe": 109, "fiddle": 110,
    "shanai": 111, "steel_drums": 114,
}
TAG_OF_PROGRAM = {p: t for t, p in GM.items()}
STYLE_METER = {"waltz": {(3, 4)}, "minuet": {(3, 4)}, "march": {(2, 4), (4, 4)}, "polka": {(2, 4)},
               "jig": {(6, 8)}, "slip_jig": {(9, 8)}, "odd_meter": {(5, 4)}, "rock": {(4, 4)},
               "reel": {(4, 4)}, "bossa": {(4, 4)}, "swing": {(4, 4)}}
METER_TAGS = {"time_2_4", "time_3_4", "time_4_4", "time_5_4", "time_6_8", "time_9_8"}


@pytest.fixture(scope="module")
def plan400():
    return plan_corpus(400, seed=0)


def _sample(plan, first_tracks: int = 12):
    """Clips of the first tracks plus, greedily, one clip per tag not yet covered."""
    tracks = set(plan.tracks[:first_tracks])
    chosen = [c for c in plan.clips if c.track in tracks]
    seen = {t for c in chosen for t in c.tags}
    for clip in sorted(plan.clips, key=lambda c: min(plan.tag_counts()[t] for t in c.tags)):
        if set(clip.tags) - seen:
            chosen.append(clip)
            seen |= set(clip.tags)
    return chosen


def test_gm_table_matches_general_midi():
    assert {n: i.program for n, i in gm.INSTRUMENTS.items()} == GM
    assert pretty_midi.program_to_instrument_name(GM["sitar"]) == "Sitar"
    assert pretty_midi.program_to_instrument_name(GM["steel_drums"]) == "Steel Drums"
    assert pretty_midi.program_to_instrument_name(GM["harpsichord"]) == "Harpsichord"


def test_plan_is_deterministic_and_seeded():
    a, b, c = plan_corpus(60, seed=3), plan_corpus(60, seed=3), plan_corpus(60, seed=4)
    assert a == b and labels_csv_text(a) == labels_csv_text(b)
    assert labels_csv_text(a) != labels_csv_text(c)
    assert len(a.clips) == 60 and len({x.clip_id for x in a.clips}) == 60


def test_labels_agree_with_the_midi(plan400):
    clips = _sample(plan400)
    assert {t for c in clips for t in c.tags} == {t for c in plan400.clips for t in c.tags}
    for clip in clips:
        pm = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(clip)))
        tags, where = set(clip.tags), clip.clip_id
        melodic = [i for i in pm.instruments if not i.is_drum]
        kits = [i for i in pm.instruments if i.is_drum]
        # Instruments: exactly the programs of the non-drum parts, each of which plays.
        assert {TAG_OF_PROGRAM[i.program] for i in melodic} == tags & set(GM), where
        assert all(i.notes for i in pm.instruments), where
        # Drums: the tag iff the kit (channel 10) plays; the kit never yields an instrument tag.
        assert ("drums" in tags) == bool(kits and kits[0].notes), where
        assert len(kits) <= 1 and all(k.program == 0 for k in kits), where
        # Families follow the instruments (plus percussion from the kit).
        families = {f for i in melodic for f in gm.BY_PROGRAM[i.program].families}
        families |= {"percussion"} if kits else set()
        assert families == tags & set(gm.FAMILIES), where
        # Metre, tempo band and mode are what the file says.
        (ts,) = pm.time_signature_changes
        assert tags & METER_TAGS == {f"time_{ts.numerator}_{ts.denominator}"}, where
        for style, meters in STYLE_METER.items():
            if style in tags:
                assert (ts.numerator, ts.denominator) in meters, where
        _, (bpm,) = pm.get_tempo_changes()
        band = "slow" if bpm < 90 else "medium" if bpm < 130 else "fast"
        assert band in tags and len(tags & {"slow", "medium", "fast"}) == 1, where
        (ks,) = pm.key_signature_changes
        mode = "minor" if ks.key_number >= 12 else "major"
        assert mode in tags and len(tags & {"major", "minor"}) == 1, where
        # The mode's third: major clips never sound the minor third above the tonic, and vice versa.
        pcs = {(n.pitch - ks.key_number % 12) % 12 for i in melodic for n in i.notes}
        assert (3 if mode == "major" else 4) not in pcs, where
        assert (4 if mode == "major" else 3) in pcs or clip.style == "raga", where
        assert max(n.end for i in pm.instruments for n in i.notes) <= clip.clip_s + 0.01, where  # a tick


def test_long_tail_exists(plan400):
    counts = plan400.tag_counts()
    rare = {t for t, k in counts.items() if k < 0.02 * 400}
    assert len(rare) >= 8, counts
    assert {"harpsichord", "steel_drums", "time_5_4", "time_9_8"} <= rare
    assert {"sitar", "bagpipe", "koto"} & rare
    assert max(counts.values()) > 0.5 * 400  # and a head
    assert set(counts) <= set(all_tags())


def test_split_is_by_track_and_spreads_rare_tags(plan400):
    split_of = defaultdict(set)
    for clip in plan400.clips:
        split_of[clip.track].add(clip.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert {c.split for c in plan400.clips} == {"train", "test"}
    n_test = sum(c.split == "test" for c in plan400.clips)
    assert 0.25 <= n_test / 400 <= 0.35
    tracks_of = defaultdict(set)
    for clip in plan400.clips:
        for tag in clip.tags:
            tracks_of[tag].add(clip.track)
    for tag, tracks in tracks_of.items():
        if len(tracks) >= 2:
            assert {split_of[t].copy().pop() for t in tracks} == {"train", "test"}, tag


def test_tracks_group_clips_with_equal_tags(plan400):
    by_track = defaultdict(list)
    for clip in plan400.clips:
        by_track[clip.track].append(clip)
    assert all(len({c.tags for c in cs}) == 1 for cs in by_track.values())
    sizes = Counter(len(cs) for cs in by_track.values())
    assert sizes[1] and sizes[2] and sizes[3]


def test_make_corpus_is_byte_identical(tmp_path):
    kw = dict(n_clips=4, seed=5, clip_s=3.0, sample_rate=16000)
    a = make_corpus(tmp_path / "a", workers=1, **kw)
    b = make_corpus(tmp_path / "b", workers=2, **kw)
    files = sorted(p.relative_to(a.out_dir) for p in a.out_dir.rglob("*") if p.is_file())
    assert len(files) == 9  # labels.csv, 4 MIDI, 4 WAV
    for rel in files:
        assert (a.out_dir / rel).read_bytes() == (b.out_dir / rel).read_bytes(), rel
    assert a.n_clips == 4 and a.n_train + a.n_test == 4


def test_corpus_audio_and_labels(tmp_path):
    import soundfile as sf

    done = []
    summary = make_corpus(tmp_path, n_clips=3, seed=1, clip_s=3.0, sample_rate=8000, workers=1,
                          progress=lambda i, n: done.append((i, n)), audio_format="flac")
    assert done == [(1, 3), (2, 3), (3, 3)]
    rows = read_labels(summary.labels_csv)
    plan = {c.audio_name("flac"): c for c in plan_corpus(3, seed=1, clip_s=3.0).clips}
    assert [r.path for r in rows] == sorted(plan)
    for row in rows:
        assert isinstance(row, LabelRow) and row.tags == plan[row.path].tags
        audio, sr = sf.read(tmp_path / row.path)
        assert sr == 8000 and audio.shape == (24000,)
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        peak_limited = np.max(np.abs(audio)) > 0.97
        assert peak_limited or abs(rms_db - plan[row.path].loudness_db) < 0.5
        assert (tmp_path / plan[row.path].midi_name).is_file()


def test_bad_arguments_and_labels(tmp_path):
    with pytest.raises(InputError, match="n_clips"):
        make_corpus(tmp_path, n_clips=0)
    with pytest.raises(InputError, match="clip_s"):
        make_corpus(tmp_path, n_clips=1, clip_s=1.0)
    with pytest.raises(InputError, match="audio_format"):
        make_corpus(tmp_path, n_clips=1, audio_format="mp3")
    with pytest.raises(InputError, match="no labels file"):
        read_labels(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("path,tags\nx.wav,a\n")
    with pytest.raises(InputError, match="split, track"):
        read_labels(tmp_path / "bad.csv")


def test_every_part_plays_even_in_the_shortest_clips():
    from tagstore.corpus.compose import compose

    for clip in plan_corpus(400, seed=1, clip_s=3.0).clips:
        pm = compose(clip)  # raises if a tagged part has no notes
        assert len(pm.instruments) == len(clip.parts) + (clip.drums is not None)
