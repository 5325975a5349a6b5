"""Model tags: a backend's own output tags (musicnn's 50) scored at ingest, beside learned tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagstore import catalogue as cat
from tagstore import api
from tagstore.store import Store

pytest.importorskip("torch", reason="the musicnn backend needs torch (pip install 'tagstore[torch]')")


@pytest.fixture
def musicnn_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from test_musicnn import fake_wheel

    from tagstore.embedders import pretrained

    weights = tmp_path / "weights"
    pretrained.import_file("musicnn", fake_wheel(tmp_path / "fake.whl"), unverified=True, weights_dir=weights)
    monkeypatch.setenv("TAGSTORE_WEIGHTS_DIR", str(weights))
    return weights


def test_ingest_scores_model_tags_beside_learned_ones(musicnn_weights: Path, tmp_path: Path, library: Path) -> None:
    store = Store.init(tmp_path / "s", embedders="musicnn")
    assert len(api.add(store, [library / "a"]).added) == 6
    model_tags = api.tags(store, kind="model")
    assert len(model_tags) == 50 and all(t.name.startswith("musicnn:") for t in model_tags)
    assert all(t.scored == 6 and t.method == "model" for t in model_tags)
    # Each model tag has its own threshold (the top-3 share rule, not a fixed 0.5): every track carries
    # as many model tags as its top 3 (ties aside).
    with cat.reading(store.path) as con:
        bad = con.execute(
            """SELECT count(*) FROM tag_scores s JOIN tags t ON t.id = s.tag_id
               WHERE s.predicted <> (s.score >= t.threshold) OR s.score < 0 OR s.score > 1 OR t.rule <> 'top'"""
        ).fetchone()[0]
        n_predicted = con.execute("SELECT count(*) FROM tag_scores WHERE predicted").fetchone()[0]
    assert bad == 0 and n_predicted >= 3 * 6
    # A learned tag lives beside them; re-adding does not duplicate model-tag rows.
    api.add_tag(store, "mine", ["1"])
    api.add(store, [library])
    kinds = {t.kind for t in api.tags(store)}
    assert kinds == {"model", "learned"} and len(api.tags(store, kind="model")) == 50
    assert all(t.scored == 12 for t in api.tags(store))
    top = api.scores(store, "musicnn:rock", top=3)
    assert len(top) == 3 and top[0].score >= top[-1].score
