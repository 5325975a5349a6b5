"""Few-shot protocol: draws grouped by track, train split only, seeded, nested, short tags handled."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tagstore.evaluation.protocol import (
    CurvePoint, LabelledClip, Result, aggregate, few_shot_plan, per_tag_ap, score_draw,
)


def _table() -> list[LabelledClip]:
    """Tracks of 1-3 clips; 'common' on many tracks, 'rare' on 2 train tracks (5 clips), 'gone' only
    in test, 'trainonly' only in train."""
    clips = []
    rng = np.random.default_rng(0)
    for t in range(40):
        split = "test" if t % 5 == 0 else "train"
        tags = {"common"} if t % 2 else {"other"}
        if t in (1, 2):
            tags.add("rare")
        if t == 5:
            tags |= {"rare", "gone"}
        if t == 3:
            tags.add("trainonly")
        n = 3 if t in (1, 2) else int(rng.integers(1, 4))
        clips += [LabelledClip(f"c{t:02d}_{i}", f"t{t:02d}", frozenset(tags), split) for i in range(n)]
    return clips


@pytest.fixture(scope="module")
def table():
    return _table()


def test_draws_use_the_train_split_only(table):
    plan = few_shot_plan(table, shots=(1, 2, 4), n_draws=3)
    split = {c.id: c.split for c in table}
    assert set(plan.eval_ids) == {c.id for c in table if c.split == "test"}
    for d in plan.draws:
        assert all(split[i] == "train" for i in d.pos_ids + d.neg_ids)
    tags = {c.id: c.tags for c in table}
    for d in plan.draws:
        assert all(d.tag in tags[i] for i in d.pos_ids)
        assert all(d.tag not in tags[i] for i in d.neg_ids)


def test_tags_evaluated_need_both_classes_in_test_and_train(table):
    plan = few_shot_plan(table, n_draws=1)
    assert plan.tags == ("common", "other", "rare")
    assert plan.skipped["gone"] == "no positives in the train split"
    assert plan.skipped["trainonly"] == "no positives in the test split"
    assert plan.truth("rare").sum() == sum(1 for c in table if c.split == "test" and "rare" in c.tags)


def test_positives_come_from_distinct_tracks_first(table):
    track = {c.id: c.track for c in table}
    plan = few_shot_plan(table, shots=(1, 2, 3, 4, 5, 6), n_draws=4, tags=["rare", "common"])
    n_tracks = {"rare": 2, "common": len({c.track for c in table
                                          if c.split == "train" and "common" in c.tags})}
    for d in plan.draws:
        if d.full:
            continue
        counts = np.unique([track[i] for i in d.pos_ids], return_counts=True)[1]
        if d.k <= n_tracks[d.tag]:
            assert counts.max() == 1, d
        else:  # tracks are reused round-robin: every track once before any twice
            assert len(counts) == n_tracks[d.tag] and counts.max() - counts.min() <= 1, d


def test_nested_seeded_and_independent_of_input_order(table):
    a = few_shot_plan(table, shots=(1, 2, 4, 8), n_draws=3, seed=7)
    shuffled = list(table)
    random.Random(1).shuffle(shuffled)
    assert few_shot_plan(shuffled, shots=(1, 2, 4, 8), n_draws=3, seed=7) == a
    assert few_shot_plan(table, shots=(1, 2, 4, 8), n_draws=3, seed=8) != a
    by = {(d.tag, d.draw, d.k): d for d in a.draws}
    for (tag, draw, k), d in by.items():
        if k not in (None, 1):
            smaller = by[(tag, draw, k // 2)]
            assert d.pos_ids[: len(smaller.pos_ids)] == smaller.pos_ids
    draws = {d.pos_ids for d in a.draws if d.tag == "common" and d.k == 2}
    assert len(draws) > 1  # draws differ


def test_k_larger_than_available(table):
    keep = few_shot_plan(table, shots=(4, 8), n_draws=2, tags=["rare"])
    n_pos = sum(1 for c in table if c.split == "train" and "rare" in c.tags)
    assert n_pos == 6
    for d in keep.draws:
        if d.k == 8:
            assert d.short and len(d.pos_ids) == n_pos and len(set(d.pos_ids)) == n_pos
        elif d.k == 4:
            assert not d.short and len(d.pos_ids) == 4
    skip = few_shot_plan(table, shots=(4, 8), n_draws=2, tags=["rare"], short="skip")
    assert {d.k for d in skip.draws} == {4, None}


def test_negatives_and_full_train_ceiling(table):
    train = [c for c in table if c.split == "train"]
    plan = few_shot_plan(table, shots=(1, 2), n_draws=1, neg_per_pos=3, tags=["common"])
    ks = {d.k: d for d in plan.draws}
    assert len(ks[1].neg_ids) == 3 and len(ks[2].neg_ids) == 6
    full = ks[None]
    assert set(full.pos_ids) == {c.id for c in train if "common" in c.tags}
    assert set(full.neg_ids) == {c.id for c in train if "common" not in c.tags}
    every = few_shot_plan(table, shots=(1,), n_draws=1, tags=["common"], full_train=False)
    assert len(every.draws) == 1 and set(every.draws[0].neg_ids) == set(full.neg_ids)


def test_on_a_planned_corpus_no_track_leaks():
    from tagstore.corpus import plan_corpus

    corpus = plan_corpus(120, seed=2)
    clips = [LabelledClip(c.clip_id, c.track, frozenset(c.tags), c.split) for c in corpus.clips]
    plan = few_shot_plan(clips, shots=(1, 4), n_draws=2)
    test_tracks = {c.track for c in clips if c.split == "test"}
    track = {c.id: c.track for c in clips}
    assert all(track[i] not in test_tracks for d in plan.draws for i in d.pos_ids + d.neg_ids)
    assert len(plan.tags) > 20


def test_bad_tables_raise():
    c = LabelledClip("a", "t", frozenset({"x"}), "train")
    with pytest.raises(ValueError, match="unique"):
        few_shot_plan([c, c])
    with pytest.raises(ValueError, match="split"):
        few_shot_plan([LabelledClip("a", "t", frozenset(), "valid")])
    with pytest.raises(ValueError, match="short"):
        few_shot_plan([c], short="maybe")


def test_score_draw_and_aggregate(table):
    plan = few_shot_plan(table, shots=(1,), n_draws=1, tags=["common"])
    y = plan.truth("common")
    r = score_draw(plan, plan.draws[0], y.astype(float), "dsp", "probe")
    assert (r.ap, r.auc, r.k, r.tag) == (1.0, 1.0, 1, "common")
    with pytest.raises(ValueError, match="shape"):
        score_draw(plan, plan.draws[0], [0.0], "dsp", "probe")
    results = [Result("e", "m", 1, 0, "a", 0.5, 0.6), Result("e", "m", 1, 0, "b", 0.7, 0.8),
               Result("e", "m", 1, 1, "a", 0.9, 1.0), Result("e", "m", 1, 1, "b", 0.9, 1.0),
               Result("e", "m", None, 0, "a", 1.0, 1.0)]
    pts = aggregate(results)
    assert pts[0] == CurvePoint("e", "m", 1, 2, 2, pytest.approx(0.75), pytest.approx(0.15),
                                pytest.approx(0.85), pytest.approx(0.15))
    assert pts[1].k is None and pts[1].ap_mean == 1.0 and pts[1].ap_std == 0.0
    table_ap = per_tag_ap(results)[("e", "m")]
    assert table_ap["a"][1] == (pytest.approx(0.7), pytest.approx(0.2))
    assert list(table_ap["a"]) == [1, None]


def test_f1_at_the_fits_threshold(table):
    plan = few_shot_plan(table, shots=(1,), n_draws=1, tags=["common"])
    y = plan.truth("common")
    s = np.where(y, 2.0, 0.0)
    s[np.flatnonzero(~y)[0]] = 1.5  # one negative above the threshold
    r = score_draw(plan, plan.draws[0], s, "dsp", "probe", threshold=1.0)
    assert r.f1 == pytest.approx(2 * y.sum() / (2 * y.sum() + 1))
    assert score_draw(plan, plan.draws[0], s, "dsp", "probe").f1 is None  # no threshold, no F1
    pts = aggregate([r, Result("dsp", "probe", 1, 1, "common", 1.0, 1.0, 0.5)])
    assert pts[0].f1_mean == pytest.approx((r.f1 + 0.5) / 2)
