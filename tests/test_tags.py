"""Learned tags through the store: fitting, scoring, incremental rescoring, propagation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli, write_clip

from tagstore import catalogue as cat
from tagstore import api
from tagstore.errors import NotAudioError, TagError, TrackNotFoundError, UnknownTagError
from tagstore.store import Store


def _ids(store: Store, kind: str) -> list[int]:
    return [t.id for t in store.tracks(match=kind)]


def _count(store: Store, sql: str, *params: object) -> int:
    with cat.reading(store.path) as con:
        return con.execute(sql, list(params)).fetchone()[0]


@pytest.fixture
def filled(store: Store, library: Path) -> Store:
    api.add(store, [library])
    store.close()
    return store


def test_add_tag_scores_every_track_and_ranks_examples_kind_first(filled: Store) -> None:
    noise = _ids(filled, "noise")
    summary = api.add_tag(filled, "noisy", [str(i) for i in noise[:2]])
    assert summary.kind == "learned" and summary.n_pos == 2 and summary.scored == 12
    top = api.scores(filled, "noisy", top=3)
    assert {t.id for t in top} == set(noise)  # the third noise clip ranks with its examples
    assert all(t.predicted == (t.score >= summary.threshold) for t in api.scores(filled, "noisy", top=None))
    assert [e["id"] for e in api.tag_examples(filled, "noisy")] == noise[:2]
    found = api.scores(filled, "noisy", top=1, exclude_examples=True)
    assert [t.id for t in found] == [noise[2]] and found[0].rank == 1


def test_running_again_adds_examples_and_a_label_can_flip(filled: Store) -> None:
    tone, chord = _ids(filled, "tone"), _ids(filled, "chord")
    api.add_tag(filled, "bright", [str(tone[0])], [str(chord[0])])
    s = api.add_tag(filled, "bright", [str(tone[1]), str(chord[0])])  # chord[0] becomes positive
    assert (s.n_pos, s.n_neg) == (3, 0)
    labels = {e["id"]: e["label"] for e in api.tag_examples(filled, "bright")}
    assert labels == {tone[0]: "positive", tone[1]: "positive", chord[0]: "positive"}


def test_outside_file_as_example_is_embedded_not_ingested(filled: Store, tmp_path: Path) -> None:
    outside = write_clip(tmp_path / "ext.wav", "clicks", 2.5, seed=50)
    api.add_tag(filled, "beat", [str(outside)])
    assert _count(filled, "SELECT count(*) FROM tracks") == 12
    assert api.tag_examples(filled, "beat") == [{"label": "positive", "id": None, "path": str(outside)}]
    assert {t.id for t in api.scores(filled, "beat", top=3)} == set(_ids(filled, "clicks"))
    api.add_tag(filled, "beat2", [str(write_clip(tmp_path / "ext2.wav", "clicks", 2.5, seed=51))], add_files=True)
    assert _count(filled, "SELECT count(*) FROM tracks") == 13


def test_new_tracks_are_scored_incrementally(filled: Store, tmp_path: Path) -> None:
    api.add_tag(filled, "noisy", [str(i) for i in _ids(filled, "noise")[:2]])
    before = {t.id: t.score for t in api.scores(filled, "noisy", top=None)}
    api.add(filled, [write_clip(tmp_path / "new" / "noise_new.wav", "noise", 3.0, seed=77)])  # add scores it
    new_id = max(t.id for t in filled.tracks())
    after = {t.id: t.score for t in api.scores(filled, "noisy", top=None)}
    assert set(after) == set(before) | {new_id} and all(after[i] == before[i] for i in before)
    assert api.tag(filled)["tracks"] == 0  # nothing missing
    with cat.transaction(filled.path) as con:
        con.execute("DELETE FROM tag_scores WHERE track_id = ?", [new_id])
    assert api.tag(filled)["tracks"] == 1
    rescored = {t.id: t.score for t in api.scores(filled, "noisy", top=None)}
    np.testing.assert_allclose(rescored[new_id], after[new_id], rtol=1e-6)  # incremental == full
    assert api.tag(filled, all_tracks=True)["tracks"] == 13


def test_propagate_suggest_explain(filled: Store) -> None:
    noise = _ids(filled, "noise")
    api.add_tag(filled, "noisy", [str(noise[0])], [str(_ids(filled, "tone")[0])])
    found = api.propagate(filled, "noisy", k=3)
    assert found and found[0]["id"] in noise[1:] and found[0]["sources"] == [noise[0]]
    assert all(f["id"] != noise[0] for f in found)
    assert _count(filled, "SELECT count(*) FROM tag_suggestions") == len(found)
    assert _count(filled, "SELECT count(*) FROM tag_examples") == 2  # suggestions are never examples
    picked = api.suggest(filled, "noisy", n=3)
    assert len(picked) == 3 and not {p["id"] for p in picked} & {noise[0], _ids(filled, "tone")[0]}
    exp = api.explain(filled, str(noise[1]), "noisy")
    assert exp["nearest_positive"][0]["id"] == noise[0] and exp["predicted"] in (True, False)
    assert exp["score"] == pytest.approx(
        next(t.score for t in api.scores(filled, "noisy", top=None) if t.id == noise[1]), rel=1e-5)  # fmt: skip


def test_query_by_tag_and_tag_filters_filter_inside_the_search(filled: Store) -> None:
    noise = _ids(filled, "noise")
    api.add_tag(filled, "noisy", [str(i) for i in noise[:2]])
    predicted = set(api.predicted_ids(filled, "noisy").tolist())
    _, hits = api.similar(filled, tag="noisy", k=3)
    assert {h.id for h in hits} == set(noise)
    _, within = api.similar(filled, 1, k=50, with_tags=["noisy"])
    assert {h.id for h in within} == predicted - {1}
    _, without = api.similar(filled, noise[0], k=5, without_tags=["noisy"])
    assert len(without) == 5 and not {h.id for h in without} & predicted


@pytest.mark.parametrize("name", ["it's \"quoted\"", "日本の音楽 🎵", "x'); DROP TABLE tracks; --", "Robert'); --"])
def test_odd_tag_names_round_trip(filled: Store, name: str) -> None:
    api.add_tag(filled, name, [str(_ids(filled, "noise")[0])])
    assert [t.name for t in api.tags(filled)] == [name]
    assert _count(filled, "SELECT count(*) FROM tracks") == 12
    api.remove_tag(filled, name)
    assert api.tags(filled) == [] and _count(filled, "SELECT count(*) FROM tag_scores") == 0


def _snapshot(store: Store) -> tuple:
    with cat.reading(store.path) as con:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("tags", "tag_examples", "tag_external_examples", "tag_scores"))  # fmt: skip


def test_bad_inputs_fail_cleanly_and_write_nothing(filled: Store, tmp_path: Path, store_dir: Path) -> None:
    api.add_tag(filled, "noisy", [str(_ids(filled, "noise")[0])])
    before = _snapshot(filled)
    not_audio = tmp_path / "readme.wav"
    not_audio.write_text("not audio")
    cases = [
        (UnknownTagError, "no tag 'nope'", lambda: api.scores(filled, "nope")),
        (UnknownTagError, "no tag 'nope'", lambda: api.explain(filled, "1", "nope")),
        (TagError, "no examples given", lambda: api.add_tag(filled, "empty", [])),
        (TagError, "no positive examples", lambda: api.add_tag(filled, "negonly", [], ["1"])),
        (TagError, "cannot be empty", lambda: api.add_tag(filled, "  ", ["1"])),
        (TagError, "unknown method", lambda: api.add_tag(filled, "m", ["1"], method="svm")),
        (TrackNotFoundError, "'4242'", lambda: api.add_tag(filled, "noisy", ["2", "4242"])),
        (NotAudioError, "readme.wav", lambda: api.add_tag(filled, "noisy", ["2", str(not_audio)])),
        (TagError, "is not an example", lambda: api.remove_examples(filled, "noisy", ["5"])),
    ]
    for exc, needle, call in cases:
        with pytest.raises(exc, match=needle):
            call()
        assert _snapshot(filled) == before, needle
    # Only positives in an empty catalogue / a catalogue of just the example.
    lonely = Store.init(tmp_path / "lonely", embedders="dsp")
    with pytest.raises(TagError, match="empty"):
        api.add_tag(lonely, "x", ["1"])
    api.add(lonely, [write_clip(tmp_path / "one" / "a.wav", "tone", 2.0)])
    with pytest.raises(TagError, match="only positive examples"):
        api.add_tag(lonely, "x", ["1"])
    assert _snapshot(lonely) == (0, 0, 0, 0)


def test_cli_tag_commands(runner, filled: Store) -> None:  # type: ignore[no-untyped-def]
    s = ["--store", filled.path]
    noise = _ids(filled, "noise")
    out = cli(runner, *s, "add-tag", "noisy", "-e", noise[0], "-e", noise[1], "--json")
    assert out.exit_code == 0, out.output
    csv_rows = cli(runner, *s, "scores", "noisy", "--csv", "--top", "3").stdout.splitlines()
    assert csv_rows[0] == "rank,id,path,title,artist,duration_s,score,predicted,probability" and len(csv_rows) == 4  # the JSON columns
    assert cli(runner, *s, "scores", "noisy", "--m3u").stdout.startswith("#EXTM3U")
    assert "noisy" in cli(runner, *s, "tags").stdout
    bad = cli(runner, *s, "scores", "nope")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: no tag 'nope'")
    assert cli(runner, *s, "query", "similar", "--tag", "noisy", "-k", "2", "--json").exit_code == 0
    assert cli(runner, *s, "query", "similar", "1", "--tag", "noisy").exit_code == 2


def test_re_embed_refits_learned_tags(filled: Store, tmp_path: Path) -> None:
    noise = _ids(filled, "noise")
    outside = write_clip(tmp_path / "ext.wav", "noise", 2.5, seed=60)
    api.add_tag(filled, "noisy", [str(noise[0]), str(outside)])
    record = api.rebuild(filled, re_embed=True)
    assert record.count == 12
    (summary,) = api.tags(filled)
    assert summary.scored == 12 and summary.n_pos == 2
    assert {t.id for t in api.scores(filled, "noisy", top=3)} == set(noise)


def test_auto_method_follows_the_number_of_positives(filled: Store, tmp_path: Path) -> None:
    ids = [t.id for t in filled.tracks()]
    s = api.add_tag(filled, "many", [str(i) for i in ids[:4]])
    assert s.method == "ensemble"  # auto, 4 positives
    assert api.add_tag(filled, "many", [str(ids[4])]).method == "probe"  # auto, 5 positives (AUTO_PROBE_FROM)
    api.remove_examples(filled, "many", [str(ids[4])])
    assert api.tags(filled, names=["many"])[0].method == "ensemble"
    for i in range(8):  # more tracks, so 10 positives are possible
        api.add(filled, [write_clip(tmp_path / "more" / f"m{i}.wav", "tone", 2.0, seed=200 + i)])
    ids = [t.id for t in filled.tracks()]
    assert api.add_tag(filled, "many", [str(i) for i in ids[4:10]]).method == "probe"  # auto, 10 positives
    assert api.add_tag(filled, "pinned", [str(ids[0])], method="prototype").method == "prototype"
    assert api.add_tag(filled, "pinned", [str(ids[1])]).method == "prototype"  # the choice is kept
