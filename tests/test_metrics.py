"""Metrics: equal to scikit-learn (a test-only dependency) within 1e-12, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from tagstore.learning.metrics import average_precision, evaluable, macro, per_tag, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="comparison needs scikit-learn")


def _cases():
    rng = np.random.default_rng(0)
    for i in range(120):
        n = int(rng.integers(2, 200))
        y = rng.random(n) < rng.uniform(0.05, 0.95)
        if y.all() or not y.any():
            y[0] = not y[0]
        levels = int(rng.integers(1, 12)) if i % 2 else 0  # even cases: continuous; odd: heavy ties
        s = rng.integers(0, levels, n).astype(float) / 7 if levels else rng.normal(size=n)
        yield y, s


def test_average_precision_matches_sklearn_with_ties():
    for y, s in _cases():
        assert abs(average_precision(y, s) - sklearn_metrics.average_precision_score(y, s)) < 1e-12


def test_roc_auc_matches_sklearn_with_ties():
    for y, s in _cases():
        assert abs(roc_auc(y, s) - sklearn_metrics.roc_auc_score(y, s)) < 1e-12


def test_known_values():
    y = np.array([1, 0, 1, 0], dtype=bool)
    assert roc_auc(y, [0.9, 0.9, 0.1, 0.1]) == 0.5
    assert average_precision(y, [4, 3, 2, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([1, 1, 0], [0, 0, 0]) == pytest.approx(2 / 3)
    assert average_precision([True, True], [0.1, 0.2]) == 1.0


def test_macro_skips_single_class_tags():
    rng = np.random.default_rng(1)
    y = rng.random((50, 5)) < 0.3
    y[:, 1] = False
    y[:, 3] = True
    s = rng.normal(size=(50, 5))
    s[::3] = np.round(s[::3])  # some ties
    assert evaluable(y).tolist() == [True, False, True, False, True]
    ours = per_tag(y, s, "ap")
    assert np.isnan(ours[[1, 3]]).all()
    for metric, ref in (("ap", sklearn_metrics.average_precision_score),
                        ("auc", sklearn_metrics.roc_auc_score)):
        want = np.mean([ref(y[:, j], s[:, j]) for j in (0, 2, 4)])
        assert abs(macro(y, s, metric) - want) < 1e-12
    assert np.isnan(macro(np.zeros((4, 2), bool), np.zeros((4, 2))))


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="positive"):
        average_precision([0, 0], [1, 2])
    with pytest.raises(ValueError, match="both"):
        roc_auc([1, 1], [1, 2])
    with pytest.raises(ValueError, match="shape"):
        roc_auc([1, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([1, 0], [np.nan, 2])
    with pytest.raises(ValueError, match="boolean"):
        average_precision([2, 0], [1, 2])
