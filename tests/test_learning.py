"""Tests of tagstore.learning: the exact probe (against scikit-learn), prototypes, thresholds, the ensemble's
incremental scoring, serialisation, propagation, suggestions, explanations and errors."""

from __future__ import annotations

import numpy as np
import pytest

from tagstore.errors import StoreFormatError, TagError
from tagstore.learning import (
    C_DEFAULT,
    C_GRID,
    FALLBACK_Z,
    CatalogueStats,
    TagModel,
    average_precision,
    best_f1_threshold,
    explain,
    fit_probe,
    fit_tag,
    propagate,
    score_tags,
    suggest,
)

sklearn = pytest.importorskip("sklearn", reason="scikit-learn (the 'test' extra) checks the probe")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402


def make_catalogue(n: int = 2000, d: int = 64, seed: int = 0, prevalence: float = 0.02):
    """Seeded (n, d) float32 catalogue (low-rank structure, offset mean) and a rare tag: (n,) bool."""
    rng = np.random.default_rng(seed)
    k = 8
    G = rng.normal(size=(n, k))
    L = rng.normal(size=(k, d)) * np.linspace(2.0, 0.5, k)[:, None]
    X = G @ L + rng.normal(size=(n, d)) + 3.0
    u = rng.normal(size=k)
    tag = G @ u > np.quantile(G @ u, 1 - prevalence)
    return X.astype(np.float32), tag


@pytest.fixture(scope="module")
def catalogue():
    X, tag = make_catalogue()
    return X, tag, CatalogueStats.from_embeddings(X)


def split(X, tag, n_pos, n_sample=200, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.permutation(np.flatnonzero(tag))[:n_pos]
    sample = rng.choice(np.flatnonzero(~tag), n_sample, replace=False)
    return X[pos], X[sample]


# --- the probe equals scikit-learn's LogisticRegression ---------------------------------------------


def sk_probe(X, y, C, sample_weight=None, class_weight=None):
    model = LogisticRegression(C=C, class_weight=class_weight, tol=1e-12, max_iter=10_000,
                               solver="newton-cholesky")  # fmt: skip
    return model.fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize(
    "seed, n, d, n_pos, C, weighted, class_weight",
    [
        (0, 40, 300, 5, 1.0, False, None),
        (1, 120, 512, 20, 0.01, True, "balanced"),
        (2, 300, 50, 150, 100.0, True, None),
        (3, 12, 1000, 2, 1e-3, True, "balanced"),
        (4, 200, 128, 3, 10.0, False, {0: 0.5, 1: 4.0}),
        (5, 60, 64, 30, 1e-4, True, "balanced"),
    ],
)
def test_probe_matches_sklearn(seed, n, d, n_pos, C, weighted, class_weight):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + rng.normal(size=d)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, n_pos, replace=False)] = 1
    X[y == 1] += 0.5 * rng.normal(size=d)
    sw = rng.uniform(0.1, 1.0, n) if weighted else None
    w, b = fit_probe(X, y, C, sample_weight=sw, class_weight=class_weight)
    ref = sk_probe(X, y, C, sw, class_weight)
    np.testing.assert_allclose(X @ w + b, ref.decision_function(X), atol=1e-3)
    p = 1 / (1 + np.exp(-(X @ w + b)))
    np.testing.assert_allclose(p, ref.predict_proba(X)[:, 1], atol=1e-3)


@pytest.mark.parametrize("n_neg", [0, 7])
def test_fit_tag_probe_matches_sklearn_on_standardised_weighted_rows(catalogue, n_neg):
    """fit_tag's probe = LogisticRegression(class_weight='balanced') on standardised rows, with the sampled
    tracks at UNLABELLED_WEIGHT; its scores on the whole catalogue agree within 1e-3."""
    X, tag, stats = catalogue
    P, U = split(X, tag, 8, 100)
    N = X[np.flatnonzero(~tag)[:n_neg]]
    R = X[np.flatnonzero(~tag)[-50:]]
    model = fit_tag(P, N, U, stats, method="probe", C=0.05, X_reference=R)
    rows = np.vstack([P, N, U])
    y = np.r_[np.ones(len(P)), np.zeros(len(N) + len(U))]
    sw = np.r_[np.ones(len(P) + len(N)), np.full(len(U), 0.25)]
    ref = sk_probe(stats.standardise(rows), y, 0.05, sw, "balanced")
    np.testing.assert_allclose(model.score(X), ref.decision_function(stats.standardise(X)), atol=1e-3)


# --- prototype, thresholds, cross-validation -----------------------------------------------------------


def test_prototype_score_is_the_hand_computation():
    stats = CatalogueStats(np.array([1.0, 1.0, 1.0], np.float32), np.ones(3, np.float32), 10)
    P = np.array([[2, 1, 1], [1, 3, 1]], np.float32)  # centred: (1,0,0), (0,2,0) -> units e1, e2
    N = np.array([[1, 1, 0], [1, 1, 5]], np.float32)  # centred: (0,0,-1), (0,0,4) -> units -e3, e3
    model = fit_tag(P, N, None, stats, method="prototype")
    p_pos = np.array([1, 1, 0]) / np.sqrt(2)
    np.testing.assert_allclose(model.proto_pos, p_pos, atol=1e-6)
    # the negatives' unit vectors cancel: the (unnormalised) negative prototype is the zero vector
    np.testing.assert_allclose(model.proto_neg, 0.0, atol=1e-6)
    x = np.array([[4, 2, 1]], np.float32)  # centred (3, 1, 0)
    expected = (np.array([3, 1, 0]) @ p_pos) / np.sqrt(10)
    np.testing.assert_allclose(model.score(x), [expected], atol=1e-6)

    N2 = np.array([[1, 1, 3], [1, 2, 1]], np.float32)  # units e3, e2 -> p- = (0, 1, 1) / 2, not renormalised
    model = fit_tag(P, N2, None, stats, method="prototype")
    p_neg = np.array([0, 1, 1]) / 2
    np.testing.assert_allclose(
        model.score(x), [(np.array([3, 1, 0]) @ (p_pos - p_neg)) / np.sqrt(10)], atol=1e-6
    )


def test_sampled_tracks_weigh_less_in_the_negative_prototype():
    stats = CatalogueStats(np.zeros(2, np.float32), np.ones(2, np.float32), 10)
    P = np.array([[1.0, 0.0]], np.float32)
    model = fit_tag(P, np.array([[0.0, 1.0]], np.float32), np.array([[0.0, -1.0], [-1.0, 0.0]], np.float32),
                    stats, method="prototype", unlabelled_weight=0.25)  # fmt: skip
    expected = np.array([-0.25, 1.0 - 0.25]) / 1.5  # (1 * e2 + 0.25 * (-e2) + 0.25 * (-e1)) / 1.5
    np.testing.assert_allclose(model.proto_neg, expected, atol=1e-6)


def test_best_f1_threshold_constructed():
    y = np.array([1, 1, 0, 1, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    t, f1 = best_f1_threshold(y, s)  # cut below 0.6: tp 3, fp 1 -> F1 6/7, beats 0.8 (tp 2)
    assert t == pytest.approx(0.4) and f1 == pytest.approx(6 / 7)
    t, f1 = best_f1_threshold(np.array([1, 0, 1], bool), np.array([0.5, 0.5, 0.1]))
    assert f1 == pytest.approx(0.8) and t == pytest.approx(0.1)  # tied scores are one step: F1 0.5 there


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.random(60) < 0.2
        y[0] = True
        s = np.round(rng.normal(size=60), 1)  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_threshold_separates_separable_examples(catalogue):
    X, tag, stats = catalogue
    rng = np.random.default_rng(1)
    direction = rng.choice([-1.0, 1.0], size=64)
    P = stats.mean + stats.std * (6.0 * direction + 0.5 * rng.normal(size=(10, 64)))  # a tight, far cluster
    U = X[rng.choice(len(X), 200, replace=False)]
    for method in ("probe", "prototype", "ensemble"):
        model = fit_tag(P, None, U, stats, method=method)
        assert model.expected[1] == pytest.approx(1.0) and model.cv_ap == pytest.approx(1.0)
        assert model.predict(P).all() and model.predict(X).mean() < 0.01


def test_cross_validation_and_fallbacks(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 5, 200)
    m = fit_tag(P, None, U, stats, method="ensemble")
    assert m.C in C_GRID and np.isfinite(m.cv_ap) and m.n_sampled == 100 and m.n_reference == 100
    m = fit_tag(P[:2], None, U, stats, method="probe")
    assert m.C == C_DEFAULT and np.isfinite(m.cv_ap)
    m = fit_tag(P[:1], None, U, stats, method="ensemble")
    assert np.isnan(m.cv_ap) and m.to_z(m.threshold) <= FALLBACK_Z + 1e-9
    assert m.predict(P[:1]).all()


def test_fit_is_deterministic_and_ignores_the_order_of_examples(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 6, 200)
    N = X[np.flatnonzero(~tag)[:3]]
    a = fit_tag(P, N, U, stats).to_bytes()
    assert fit_tag(P, N, U, stats).to_bytes() == a
    assert fit_tag(P[[3, 1, 5, 0, 4, 2]], N[::-1], U, stats).to_bytes() == a


# --- ensemble: incremental scoring equals a full rescoring ----------------------------------------------


def test_ensemble_incremental_scoring_equals_full(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 10, 200)
    model = fit_tag(P, None, U, stats, method="ensemble")
    assert model.probe_ref is not None and model.proto_ref is not None
    full = model.score(X)
    parts = np.concatenate([model.score(X[i : i + 1000]) for i in range(0, len(X), 1000)])
    single = np.concatenate([model.score(X[i : i + 1]) for i in range(0, 50)])
    np.testing.assert_allclose(parts, full, atol=1e-5)
    np.testing.assert_allclose(single, full[:50], atol=1e-5)
    # the ensemble is the mean of the components' z-scores on constants fixed at fit time
    probe, proto = model.components(X)
    (c1, s1), (c2, s2) = model.probe_ref, model.proto_ref
    np.testing.assert_allclose(full, 0.5 * ((probe - c1) / s1 + (proto - c2) / s2), atol=1e-5)
    # new tracks scored alone get the scores they get inside the catalogue
    new = make_catalogue(300, 64, seed=9)[0]
    np.testing.assert_allclose(model.score(new), model.score(np.vstack([X, new]))[-300:], atol=1e-5)


def test_score_tags_equals_scoring_each_model(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 5, 100)
    other = CatalogueStats.from_embeddings(X[:500])  # a model fitted on older stats: its own group
    models = [fit_tag(P, None, U, stats, method=m) for m in ("probe", "prototype", "ensemble")]
    models.append(fit_tag(P, None, U, other, method="ensemble"))
    S = score_tags(models, X[:300])
    assert S.shape == (300, 4) and S.dtype == np.float32
    for t, model in enumerate(models):
        np.testing.assert_allclose(S[:, t], model.score(X[:300]), atol=1e-5)
    bad = X[:4].copy()
    bad[2, 1] = np.nan
    with pytest.raises(TagError, match="row 2"):
        score_tags(models, bad)


# --- serialisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["probe", "prototype", "ensemble"])
def test_serialisation_round_trip(catalogue, method):
    X, tag, stats = catalogue
    P, U = split(X, tag, 4, 100)
    model = fit_tag(P, X[:3], U, stats, method=method)
    back = TagModel.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(back.score(X), model.score(X))
    for name in ("method", "threshold", "C", "n_pos", "n_neg", "n_sampled", "n_reference", "version",
                 "score_ref", "probe_ref", "proto_ref"):  # fmt: skip
        assert getattr(back, name) == getattr(model, name) or (name == "C" and np.isnan(model.C))
    assert np.isnan(back.cv_ap) == np.isnan(model.cv_ap)


def test_deserialising_other_bytes_or_newer_versions_fails_clearly(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 3, 60)
    d = fit_tag(P, None, U, stats).to_dict()
    d["version"] = np.asarray(99)
    with pytest.raises(StoreFormatError, match="newer"):
        TagModel.from_dict(d)
    with pytest.raises(StoreFormatError):
        TagModel.from_bytes(b"not a model")


# --- propagation, suggestions, explanations ----------------------------------------------------------------


def test_propagate_votes_and_never_returns_examples():
    ex = np.array([10, 20])
    nb = np.array([[10, 1, 2, -1], [20, 2, 3, 10]])
    sim = np.array([[1.0, 0.9, 0.5, 0.0], [1.0, 0.8, 0.4, 0.7]])
    out = propagate(ex, nb, sim)
    assert [(s.id, round(s.score, 6), s.sources) for s in out] == [
        (2, 0.65, (20, 10)),
        (1, 0.45, (10,)),
        (3, 0.2, (20,)),
    ]
    assert [s.id for s in propagate(ex, nb, sim, exclude=[3], limit=1)] == [2]
    assert propagate(np.array([5]), np.array([[5, -1]]), np.array([[1.0, 0.0]])) == []
    with pytest.raises(TagError):
        propagate(ex, nb[:1], sim[:1])


def test_suggest_prefers_uncertain_then_diverse():
    stats = CatalogueStats(np.zeros(3, np.float32), np.ones(3, np.float32), 10)
    P = np.array([[1, 0, 0], [0.9, 0.1, 0]], np.float32)
    model = fit_tag(P, np.array([[-1, 0, 0]], np.float32), None, stats, method="prototype")
    t, scale = model.threshold, model.score_ref[1]
    ids = np.array([100, 101, 102, 103, 104])
    V = np.array([[0, 1, 0], [0, 1, 0.01], [0, 0, 1], [1, 0, 0], [0, 1, -0.01]], np.float32)
    scores = np.array([t, t + 0.01 * scale, t + 0.02 * scale, t + 5 * scale, t])
    picked = suggest(model, ids, scores, V, n=2, exclude=[104])
    assert list(picked) == [100, 102]  # 101 is nearer the threshold but duplicates 100
    assert list(suggest(model, ids, scores, V, n=2, exclude=[104], diversity=0.0)) == [100, 101]
    fetched = suggest(model, ids, scores, lambda q: V[np.searchsorted(ids, q)], n=2, exclude=[104])
    assert list(fetched) == [100, 102]


def test_explain_parts_add_up(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 6, 200)
    N = X[np.flatnonzero(~tag)[:4]]
    model = fit_tag(P, N, U, stats, method="ensemble")
    e = explain(model, P[2] + 0.01, P, N, pos_ids=np.arange(100, 106), k=2, top_dims=5)
    parts = e.parts
    assert e.nearest_positive[0][0] == 102 and e.nearest_positive[0][1] > 0.99
    assert len(e.nearest_negative) == 2 and len(e.top_dimensions) == 5
    assert parts["intercept"] + parts["top_dimensions_sum"] + parts["other_dimensions"] == pytest.approx(
        parts["probe_logit"], abs=1e-3
    )
    assert parts["cos_pos"] - parts["neg_coherence"] * parts["cos_neg"] == pytest.approx(
        parts["prototype"], abs=1e-5
    )
    assert 0 < parts["neg_coherence"] <= 1
    assert 0.5 * (parts["probe_z"] + parts["prototype_z"]) == pytest.approx(e.score, abs=1e-4)
    assert e.predicted == (e.score >= e.threshold)
    c = e.top_dimensions[0]
    assert abs(c.contribution) >= abs(e.top_dimensions[-1].contribution)
    assert c.value * c.weight == pytest.approx(c.contribution, rel=1e-5)


# --- errors and catalogue statistics -----------------------------------------------------------------------


def test_errors(catalogue):
    X, tag, stats = catalogue
    P, U = split(X, tag, 3, 50)
    with pytest.raises(TagError, match="no positive"):
        fit_tag(np.zeros((0, 64), np.float32), None, U, stats)
    with pytest.raises(TagError, match="only positive"):
        fit_tag(P, None, None, stats)
    with pytest.raises(TagError, match="dimensions"):
        fit_tag(P[:, :10], None, U, stats)
    with pytest.raises(TagError, match="dimensions"):
        fit_tag(P, None, U[:, :10], stats)
    bad = P.copy()
    bad[1, 5] = np.nan
    with pytest.raises(TagError, match="row 1 contains NaN"):
        fit_tag(bad, None, U, stats)
    with pytest.raises(TagError, match="unknown tag learning method"):
        fit_tag(P, None, U, stats, method="svm")
    model = fit_tag(P, None, U, stats)
    with pytest.raises(TagError):
        model.score(X[:, :10])
    Xn = X[:5].copy()
    Xn[3, 0] = np.inf
    with pytest.raises(TagError, match="row 3"):
        model.score(Xn)


def test_catalogue_stats_in_chunks_equal_one_pass(catalogue):
    X, _, stats = catalogue
    chunked = CatalogueStats.from_chunks(X[i : i + 333] for i in range(0, len(X), 333))
    np.testing.assert_allclose(chunked.mean, X.astype(np.float64).mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked.std, X.astype(np.float64).std(0), rtol=1e-5)
    np.testing.assert_allclose(chunked.std, stats.std, rtol=1e-6)
    const = np.ones((10, 2), np.float32)
    assert CatalogueStats.from_embeddings(const).std.tolist() == [1.0, 1.0]
    assert CatalogueStats.from_dict(stats.to_dict()).count == stats.count
    with pytest.raises(TagError, match="empty"):
        CatalogueStats.from_chunks([])


def test_unlabelled_sample_is_the_set_difference_in_the_fixed_order():
    from tagstore.learning.sampling import position_order, sample_unlabelled

    rng = np.random.default_rng(0)
    for _ in range(100):
        pool = rng.permutation(rng.integers(0, 500, rng.integers(0, 200)))  # repeats and any order
        exclude = rng.integers(0, 500, rng.integers(0, 15)).tolist()
        rest = np.setdiff1d(pool, exclude)
        assert np.array_equal(sample_unlabelled(pool, exclude, size=1000), rest)
        ordered = np.unique(pool)[position_order(np.unique(pool).size)]  # no seed (issue 11): one fixed order
        expected = np.sort(ordered[~np.isin(ordered, exclude)][:20])
        assert np.array_equal(sample_unlabelled(pool, exclude, size=20), expected)
        catalogue = np.unique(pool)  # sorted and distinct, as a catalogue's ids come: the fast path
        head = catalogue[position_order(catalogue.size)][:25].tolist()
        for excluded in (exclude, head[:20], head[::2] + exclude):  # exclusions crowding the head too
            want = np.sort(ordered[~np.isin(ordered, excluded)][:20])
            assert np.array_equal(sample_unlabelled(catalogue, excluded, size=20), want)
