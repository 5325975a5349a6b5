"""Teaching a tag one answer at a time (tagstore.tags.teaching) and setting thresholds (tagstore.tags.thresholds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_tagged_library
from tagstore import api
from tagstore.errors import InputError, TagError, UnknownTagError
from tagstore.learning import TagModel


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = write_tagged_library(tmp_path_factory.mktemp("teach") / "music")
    store = api.init(root.parent / "store", embedders="dsp")
    api.add(store, [root])
    return store


def _ids(store, prefix: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [t.id for t in api.tracks(store) if Path(t.path).name.startswith(prefix)]


def test_answers_refit_log_and_curve(store) -> None:  # type: ignore[no-untyped-def]
    tones, noises = _ids(store, "tone_"), _ids(store, "noise_")
    first = api.label(store, "t-curve", tones[0], "yes")
    assert first.summary is not None and (first.summary.n_pos, first.summary.n_neg) == (1, 0)
    assert first.answer is not None and first.answer.created and first.answer.previous is None
    models = [api.tags(store)]
    for tid, reply in [(noises[0], "no"), (tones[1], "yes"), (noises[1], "no"), (tones[2], "yes")]:
        taught = api.label(store, "t-curve", tid, reply)
        models.append(api.tags(store))
        assert taught.summary is not None
        (row,) = [t for t in models[-1] if t.name == "t-curve"]
        assert taught.curve[-1]["cv_ap"] == row.cv_ap  # the curve logs the refit's own CV AP
        assert tid not in [p["id"] for p in taught.proposals]
    assert [p["labels"] for p in taught.curve] == [1, 2, 3, 4, 5]
    assert [(p["n_pos"], p["n_neg"]) for p in taught.curve] == [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2)]
    assert taught.curve[0]["cv_ap"] is None and taught.curve[-1]["cv_ap"] is not None
    # the answers are the tag's examples, exactly as add-tag would have stored them
    labels = {e["id"]: e["label"] for e in api.tag_examples(store, "t-curve")}
    assert labels == {tones[0]: "positive", noises[0]: "negative", tones[1]: "positive", noises[1]: "negative",
                      tones[2]: "positive"}  # fmt: skip


def test_undo_restores_the_previous_label(store) -> None:  # type: ignore[no-untyped-def]
    chords = _ids(store, "chord_")
    api.add_tag(store, "t-undo", examples=[str(chords[0])], negatives=[str(chords[1])])
    before = {e["id"]: e["label"] for e in api.tag_examples(store, "t-undo")}
    flipped = api.label(store, "t-undo", chords[1], "yes")  # was a negative
    assert flipped.answer is not None and flipped.answer.previous == 0 and not flipped.answer.created
    assert flipped.summary is not None and flipped.summary.n_pos == 2
    undone = api.undo_label(store, "t-undo")
    assert undone.summary is not None and (undone.summary.n_pos, undone.summary.n_neg) == (1, 1)
    assert {e["id"]: e["label"] for e in api.tag_examples(store, "t-undo")} == before
    with pytest.raises(TagError, match="no answer to undo"):
        api.undo_label(store, "t-undo")  # the CLI's examples are not answers: nothing left to take back


def test_a_failed_refit_records_nothing(store) -> None:  # type: ignore[no-untyped-def]
    clicks = _ids(store, "clicks_")
    api.label(store, "t-fail", clicks[0], "yes")
    with pytest.raises(TagError, match="no positive examples"):
        api.label(store, "t-fail", clicks[0], "no")  # the only positive turned negative: cannot fit
    assert [e["label"] for e in api.tag_examples(store, "t-fail")] == ["positive"]
    assert len(api.teach_state(store, "t-fail").curve) == 1
    with pytest.raises(UnknownTagError, match="answer yes"):
        api.label(store, "t-none", clicks[1], "no")
    with pytest.raises(UnknownTagError):
        api.label(store, "t-none", clicks[1], "skip")
    with pytest.raises(InputError, match="not one of"):
        api.label(store, "t-fail", clicks[1], "YES")
    assert "t-none" not in [t.name for t in api.tags(store)]


def test_skips_are_logged_and_left_out_of_proposals(store) -> None:  # type: ignore[no-untyped-def]
    tones = _ids(store, "tone_")
    api.label(store, "t-skip", tones[3], "yes")
    first = api.proposals(store, "t-skip", n=3)[0]["id"]
    skipped = api.label(store, "t-skip", first, "skip")
    assert skipped.refit_s == 0 and first not in [p["id"] for p in skipped.proposals]
    assert first not in [p["id"] for p in api.proposals(store, "t-skip", n=20)]
    assert len(skipped.curve) == 1  # a skip is no label
    assert api.undo_label(store, "t-skip").summary is not None
    assert first in [p["id"] for p in api.proposals(store, "t-skip", n=20)]


def test_removing_a_tag_or_track_removes_its_answers(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conftest import write_clip

    extra = write_clip(tmp_path / "extra_tone.wav", "tone", seconds=2.0, seed=77)
    api.add(store, [extra])
    (tid,) = [t.id for t in api.tracks(store) if t.path == str(extra)]
    api.label(store, "t-gone", _ids(store, "tone_")[0], "yes")
    api.label(store, "t-gone", tid, "yes")
    api.remove(store, [str(tid)])
    assert [p["labels"] for p in api.teach_state(store, "t-gone").curve] == [1]
    api.remove_tag(store, "t-gone")
    again = api.label(store, "t-gone", _ids(store, "tone_")[1], "yes")  # a new tag of the same name
    assert again.answer is not None and again.answer.seq == 1 and len(again.curve) == 1


def test_undoing_the_first_yes_removes_the_tag(store) -> None:  # type: ignore[no-untyped-def]
    api.label(store, "t-first", _ids(store, "noise_")[2], "yes")
    assert api.undo_label(store, "t-first").summary is None
    assert "t-first" not in [t.name for t in api.tags(store)]


def test_set_threshold_changes_predictions_and_the_model(store) -> None:  # type: ignore[no-untyped-def]
    api.add_tag(store, "t-thr", examples=[str(i) for i in _ids(store, "noise_")[:2]])
    ids, scores = api.tag_score_table(store, "t-thr")
    value = float(np.median(scores))
    expected = int((scores >= value).sum())
    assert api.threshold_count(store, "t-thr", value) == expected
    summary = api.set_threshold(store, "t-thr", value)
    assert summary.threshold == pytest.approx(value) and summary.predicted == expected
    assert set(api.predicted_ids(store, "t-thr").tolist()) == set(ids[scores >= value].tolist())
    from tagstore.catalogue import tags as tag_sql

    with store.reader() as con:
        ((_, _, blob),) = tag_sql.learned_models(con, ["t-thr"])
    model = TagModel.from_bytes(blob)
    assert model.threshold == pytest.approx(value)
    # the decision columns follow the slider: the rule becomes the calibrated probability there, which
    # `tags` shows and a later refit keeps
    p = float(model.probability(np.array([value]))[0])
    assert model.calibration is not None and 0 < p < 1
    assert (summary.rule, summary.rule_value, summary.threshold_p) == ("probability", pytest.approx(p), pytest.approx(p))
    hist = api.score_histogram(store, "t-thr", bins=8)
    assert len(hist["edges"]) == 9 and sum(hist["counts"]) == len(scores)
    assert hist["edges"][0] == pytest.approx(scores.min()) and hist["edges"][-1] == pytest.approx(scores.max())
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="finite"):
            api.set_threshold(store, "t-thr", bad)
    with pytest.raises(InputError, match="bins"):
        api.score_histogram(store, "t-thr", bins=0)
    with pytest.raises(UnknownTagError):
        api.set_threshold(store, "t-nope", 0.1)
    refit = api.add_tag(store, "t-thr", examples=[str(_ids(store, "noise_")[2])])  # one more example
    assert (refit.rule, refit.threshold_p) == ("probability", pytest.approx(p))
