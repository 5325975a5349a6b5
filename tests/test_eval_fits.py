"""The evaluation fits a draw exactly as ``add-tag`` fits a tag: same examples, same catalogue → the same
model, byte for byte (statistics, unlabelled sample, seed and solver all shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_clip

from tagstore import api
from tagstore.catalogue import tags as tag_sql
from tagstore.evaluation.fits import Space, fit_draw
from tagstore.evaluation.protocol import Draw
from tagstore.learning import CatalogueStats
from tagstore.store import Store


def _space(store: Store) -> tuple[Space, dict[int, str]]:
    """The whole store as the evaluation's train split (clip id = path), rows in catalogue order."""
    tracks = store.tracks()
    X = store.embeddings([t.id for t in tracks])
    row = {t.path: i for i, t in enumerate(tracks)}
    pool = np.arange(len(tracks), dtype=np.int64)
    sp = Space("dsp", X, row, pool, CatalogueStats.from_embeddings(X[pool]), X[:1], {i: t.path for i, t in enumerate(tracks)})
    return sp, {t.id: t.path for t in tracks}


def _stored_model(store: Store, name: str) -> bytes:
    with store.reader() as con:
        ((_, _, blob),) = tag_sql.learned_models(con, [name])
    return blob


@pytest.mark.parametrize("n_tracks", [12, 26])  # below and above the index's catalogue-statistics threshold
@pytest.mark.parametrize("method", ["probe", "ensemble", "prototype"])
def test_eval_fit_equals_add_tag(store: Store, library: Path, tmp_path: Path, method: str, n_tracks: int) -> None:
    api.add(store, [library])
    for i in range(n_tracks - 12):
        write_clip(tmp_path / "more" / f"m{i:02d}.wav", ("tone", "noise")[i % 2], 2.0, seed=100 + i)
    if n_tracks > 12:
        api.add(store, [tmp_path / "more"])
        api.rebuild(store)  # the index's statistics are over every track, as the evaluation's are
    pos, neg = [1, 5, 9], [2, 6]
    api.add_tag(store, "noisy", examples=[str(i) for i in pos], negatives=[str(i) for i in neg], method=method)
    sp, path_of = _space(store)
    draw = Draw("noisy", 3, 0, tuple(path_of[i] for i in pos), tuple(path_of[i] for i in neg))
    model, sampled = fit_draw(sp, draw, method)
    assert model.to_bytes() == _stored_model(store, "noisy")
    assert len(sampled) == n_tracks - len(pos) - len(neg)  # every other track, as add-tag samples them


def test_a_different_draw_gives_a_different_model(store: Store, library: Path) -> None:
    """The equality above is not vacuous: other examples, another model."""
    api.add(store, [library])
    api.add_tag(store, "noisy", examples=["1", "5"], method="probe")
    sp, path_of = _space(store)
    model, _ = fit_draw(sp, Draw("noisy", 2, 0, (path_of[1], path_of[9]), ()), "probe")
    assert model.to_bytes() != _stored_model(store, "noisy")
