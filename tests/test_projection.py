"""The 2-D map of the collection (tagstore.derived.projection): PCA of the index vectors, fixed signs, UMAP optional."""

from __future__ import annotations

import numpy as np
import pytest

from tagstore import api
from tagstore.derived.index import index_vectors, open_index
from tagstore.errors import InputError, MissingDependencyError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import write_tagged_library

    root = write_tagged_library(tmp_path_factory.mktemp("map") / "music")
    store = api.init(root.parent / "store", embedders="dsp")
    api.add(store, [root])
    return store


def test_pca_axes_are_the_top_principal_components(store) -> None:  # type: ignore[no-untyped-def]
    proj = api.map_projection(store)
    assert proj.method == "pca" and proj.ids.tolist() == sorted(t.id for t in api.tracks(store))
    assert proj.xy.shape == (16, 2) and proj.xy.dtype == np.float32
    assert np.abs(proj.xy).max() == pytest.approx(1.0)
    _, record = open_index(store)
    X = index_vectors(store, store.embeddings(proj.ids.tolist()), record).astype(np.float64)
    Xc = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    reference = Xc @ vt[:2].T  # 16 tracks: the whole catalogue is the PCA sample
    for axis in range(2):
        r = np.corrcoef(reference[:, axis], proj.xy[:, axis])[0, 1]
        assert abs(r) > 0.999
    # the scale is one factor for both axes
    ratio = proj.xy[:, 0] / np.where(np.abs(reference[:, 0]) > 1e-9, reference[:, 0], np.nan)
    ratio2 = proj.xy[:, 1] / np.where(np.abs(reference[:, 1]) > 1e-9, reference[:, 1], np.nan)
    assert np.nanstd(np.abs(ratio)) < 1e-3 and np.nanmean(np.abs(ratio)) == pytest.approx(np.nanmean(np.abs(ratio2)), rel=1e-3)


def test_pca_is_repeatable_with_fixed_signs(store) -> None:  # type: ignore[no-untyped-def]
    a, b = api.map_projection(store), api.map_projection(store)
    assert np.array_equal(a.xy, b.xy) and a.generation == b.generation


def test_methods_and_errors(store) -> None:  # type: ignore[no-untyped-def]
    assert api.map_methods()[0] == "pca"
    with pytest.raises(InputError, match="pca"):
        api.map_projection(store, "tsne")
    if "umap" not in api.map_methods():
        with pytest.raises(MissingDependencyError, match="umap-learn"):
            api.map_projection(store, "umap")


@pytest.mark.skipif("umap" not in api.map_methods(), reason="umap-learn is not installed (optional)")
def test_umap_places_every_track(store) -> None:  # type: ignore[no-untyped-def]
    proj = api.map_projection(store, "umap")
    assert proj.method == "umap" and proj.xy.shape == (16, 2) and np.isfinite(proj.xy).all()


def test_an_empty_store_has_an_empty_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = api.init(tmp_path / "empty", embedders="dsp")
    proj = api.map_projection(empty)
    assert proj.ids.shape == (0,) and proj.xy.shape == (0, 2)
