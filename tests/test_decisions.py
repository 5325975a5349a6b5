"""Tag decisions: deterministic fits (no name, no order), grouped folds, calibrated thresholds and their
rules, examples predicted as labelled, model tags' own thresholds, and `tagstore threshold`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from test_learning import make_catalogue, split

from tagstore import api
from tagstore.catalogue import tags as tag_sql
from tagstore.errors import TagError
from tagstore.learning import CatalogueStats, Rule, fit_tag
from tagstore.learning.decision import grouped_folds, top_share_thresholds
from tagstore.learning.fit import fit_examples
from tagstore.store import Store


@pytest.fixture(scope="module")
def catalogue():
    X, tag = make_catalogue()
    return X, tag, CatalogueStats.from_embeddings(X)


@pytest.fixture
def filled(store: Store, library: Path) -> Store:
    api.add(store, [library])
    return store


def _ids(store: Store, kind: str) -> list[str]:
    return [str(t.id) for t in store.tracks(match=kind)]


def _state(store: Store, name: str) -> tuple:
    with store.reader() as con:
        row = tag_sql.tag_row(con, name)
    (s,) = [t for t in api.tags(store) if t.name == name]
    return row.model, s.threshold, s.threshold_p, sorted(api.predicted_ids(store, name).tolist())


# --- the fit: a function of the examples as a set -------------------------------------------------------


def test_fit_examples_ignores_the_tag_name_and_the_order(catalogue) -> None:
    X, tag, stats = catalogue
    pos = np.flatnonzero(tag)[:5]
    neg = np.flatnonzero(~tag)[:2]
    pool = np.arange(len(X))
    rows = lambda r: X[r]  # noqa: E731
    a, sa = fit_examples("F", X[pos], X[neg], pool, rows, set(pos) | set(neg), stats, "ensemble")
    b, sb = fit_examples("metal", X[pos[::-1]], X[neg[::-1]], pool, rows, set(neg) | set(pos), stats, "ensemble")
    assert a.to_bytes() == b.to_bytes() and a.threshold == b.threshold
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    # one more example moves the unlabelled sample by at most one track
    _, sc = fit_examples("F", X[pos[:4]], X[neg], pool, rows, set(pos[:4]) | set(neg), stats, "ensemble")
    assert len(np.setdiff1d(sa, sc)) <= 1


def test_grouped_folds_never_split_a_group() -> None:
    groups = ["t1", "t2", "t1", "t3", "t2", "t4", "t1", "t5", "t6"]
    folds = grouped_folds(groups, 3)
    for g in set(groups):
        assert len({int(f) for f, h in zip(folds, groups) if h == g}) == 1
    assert sorted(folds[[0, 1, 3]].tolist()) == [0, 1, 2]  # the first three groups: one fold each


def test_the_fit_cross_validates_by_group(catalogue) -> None:
    """Four clips of one recording are one group: nothing can be held out, so there is no CV score, where
    the same rows as separate tracks cross-validate."""
    X, tag, stats = catalogue
    P, U = split(X, tag, 4, 200)
    apart = fit_tag(P, None, U, stats, method="probe")
    together = fit_tag(P, None, U, stats, method="probe", groups=["rec"] * 4)
    assert np.isfinite(apart.cv_ap) and apart.oof is not None
    assert np.isnan(together.cv_ap) and together.oof is None and together.calibration is None


def test_precision_rule_reaches_its_precision_with_the_most_recall(catalogue) -> None:
    X, tag, stats = catalogue
    P, U = split(X, tag, 10, 400)
    model = fit_tag(P, None, U, stats, method="probe", rule=Rule("precision", 0.9))
    o, c = model.oof, model.calibration
    t = float(model.to_z(model.threshold))

    def precision(cut: float) -> float:  # prior * recall / q, q with half a track added (the stated rule)
        recall = (o.pos >= cut).mean()
        q = ((o.catalogue >= cut).sum() + 0.5) / (o.catalogue.size + 1)
        return min(1.0, c.prior * recall / q)

    assert precision(t) >= 0.9 and model.expected[0] == pytest.approx(precision(t))
    lower = np.unique(np.concatenate([o.pos, o.neg, o.catalogue]))
    assert all(precision(cut) < 0.9 for cut in lower[lower < t])  # any lower cut falls short
    scores = model.score(X)
    p = model.probability(scores)[np.argsort(scores)]
    assert ((p >= 0) & (p <= 1)).all() and (np.diff(p) >= 0).all()  # a probability, in score order


def test_probability_rule_and_bad_rules(catalogue) -> None:
    X, tag, stats = catalogue
    P, U = split(X, tag, 6, 200)
    model = fit_tag(P, None, U, stats, rule=Rule("probability", 0.3))
    assert model.threshold_probability == pytest.approx(0.3)
    for kind, value, needle in (("probability", 1.5, "not a probability"), ("precision", 0.0, "not a probability"),
                                ("svm", None, "unknown threshold rule")):  # fmt: skip
        with pytest.raises(TagError, match=needle):
            Rule(kind, value)
    with pytest.raises(TagError, match="either --threshold or --precision"):
        Rule.of(0.3, 0.9)


# --- in the store ------------------------------------------------------------------------------------


def test_same_examples_under_two_names_and_orders_decide_the_same(filled: Store) -> None:
    noise, tone = _ids(filled, "noise"), _ids(filled, "tone")
    api.add_tag(filled, "F", [noise[0], noise[1], tone[0]], [tone[1]])
    api.add_tag(filled, "G", [tone[0], noise[1], noise[0]], [tone[1]])
    f, g = _state(filled, "F"), _state(filled, "G")
    assert f == g


def test_a_refit_without_changes_changes_nothing(filled: Store) -> None:
    noise, chord = _ids(filled, "noise"), _ids(filled, "chord")
    api.add_tag(filled, "n", [noise[0], noise[1], noise[2]], [chord[0]])
    before = _state(filled, "n")
    api.add_tag(filled, "n", [noise[1]])  # given again: nothing new
    assert _state(filled, "n") == before
    api.remove_examples(filled, "n", [chord[0]])
    api.add_tag(filled, "n", [], [chord[0]])  # removed and given back
    assert _state(filled, "n") == before


def test_examples_are_predicted_as_labelled(filled: Store) -> None:
    noise, tone = _ids(filled, "noise"), _ids(filled, "tone")
    api.add_tag(filled, "x", [noise[0], noise[1], tone[0]], [noise[2]], threshold=0.999)
    predicted = set(api.predicted_ids(filled, "x").tolist())
    assert {int(noise[0]), int(noise[1]), int(tone[0])} <= predicted  # even below the threshold
    api.threshold(filled, "x", 0.0001)
    predicted = set(api.predicted_ids(filled, "x").tolist())
    assert int(noise[2]) not in predicted and len(predicted) > 3  # a negative never, however it scores
    api.tag(filled, all_tracks=True)  # rescoring keeps both
    assert set(api.predicted_ids(filled, "x").tolist()) == predicted


def test_threshold_rules_are_kept_and_shown(runner, filled: Store) -> None:  # type: ignore[no-untyped-def]
    noise, clicks = _ids(filled, "noise"), _ids(filled, "clicks")
    s = ["--store", filled.path]
    out = cli(runner, *s, "add-tag", "n", "-e", noise[0], "-e", noise[1], "-e", noise[2], "--precision", "0.9")
    assert out.exit_code == 0, out.output
    assert "rule precision>=0.9" in out.stdout and "expected precision" in out.stdout
    (t,) = api.tags(filled)
    assert t.rule == "precision" and t.expected_precision >= 0.9 and t.cv_ap_std is not None
    api.add_tag(filled, "n", [clicks[0]])  # a refit keeps the rule
    assert api.tags(filled)[0].rule == "precision"
    table = cli(runner, *s, "tags").stdout
    assert "exp. precision" in table and "precision>=0.9" in table
    out = cli(runner, *s, "threshold", "n", "0.4", "--json")
    assert out.exit_code == 0, out.output
    assert '"rule": "probability"' in out.stdout
    assert api.tags(filled)[0].threshold_p == pytest.approx(0.4)
    assert cli(runner, *s, "threshold", "n").exit_code == 0 and api.tags(filled)[0].rule == "f1"
    bad = cli(runner, *s, "threshold", "n", "3")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: the threshold 3.0 is not a probability")
    one = api.add_tag(filled, "one", [noise[0]])
    assert one.expected_precision is None
    with pytest.raises(TagError, match="too few to cross-validate"):
        api.threshold(filled, "one", 0.3)


# --- model tags ----------------------------------------------------------------------------------------


def test_top_share_thresholds() -> None:
    S = np.array([[0.30, 0.20, 0.01, 0.02], [0.28, 0.02, 0.25, 0.01], [0.02, 0.03, 0.01, 0.001]])
    t = top_share_thresholds(S, per_track=2)
    # top 2 per track: tags {0, 1}, {0, 2}, {1, 0}: tag 0 wins 3 slots -> its 3rd best score; tag 1 two
    # -> its 2nd best; tag 2 one -> its best
    np.testing.assert_allclose(t[:3], [0.02, 0.03, 0.25])
    assert t[3] > S[:, 3].max()  # in nobody's top: predicts nothing
    assert (S >= t).sum() == 6  # as many predictions as top-2 slots


def test_model_tags_get_their_own_thresholds(runner, filled: Store) -> None:  # type: ignore[no-untyped-def]
    ids = [t.id for t in filled.tracks()]
    noise = [int(i) for i in _ids(filled, "noise")]
    names = ["m:noisy", "m:rare"] + [f"m:t{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    with filled.transaction() as con:
        for tid in ids:  # m:noisy clearly separates the noise clips; every score stays below 0.5
            probs = [0.3 if tid in noise else 0.01, 0.001, *rng.uniform(0.02, 0.2, 8)]
            tag_sql.store_model_scores(con, tid, "m", names, np.array(probs, np.float32), 0.5)
    assert api.predicted_ids(filled, "m:noisy").size == 0  # a fixed 0.5 admits nothing
    from tagstore.tags.decisions import refresh_model_tags

    refresh_model_tags(filled)
    assert sorted(api.predicted_ids(filled, "m:noisy").tolist()) == sorted(noise)
    assert api.predicted_ids(filled, "m:rare").size == 0
    s = ["--store", filled.path]
    out = cli(runner, *s, "threshold", "m:noisy", "0.5")
    assert out.exit_code == 0 and "0 of 12 tracks predicted" in out.stdout
    refresh_model_tags(filled)  # a threshold set by hand stays
    assert api.predicted_ids(filled, "m:noisy").size == 0
    res = cli(runner, *s, "query", "similar", str(ids[0]), "--with-tag", "m:noisy")
    assert res.exit_code == 0
    (line,) = [x for x in res.stderr.splitlines() if "predicts no track" in x]
    assert "m:noisy" in line and "tagstore threshold" in line
    res = cli(runner, *s, "scores", "m:noisy", "--predicted")
    assert "predicts no track" in res.stderr
    assert cli(runner, *s, "threshold", "m:noisy").exit_code == 0  # back to the rule
    assert sorted(api.predicted_ids(filled, "m:noisy").tolist()) == sorted(noise)
    assert cli(runner, *s, "threshold", "m:noisy", "--precision", "0.9").exit_code == 1
