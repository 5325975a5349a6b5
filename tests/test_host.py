"""The embedding host: windowing, padding, combined layouts, audio checks; and re-embedding a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import synth, write_clip

from tagstore import api
from tagstore import embedders
from tagstore.embedders.base import Embedder
from tagstore.embedders.host import TrackEmbedder, _Windower
from tagstore.errors import EmptyAudioError, LayoutMismatchError, SilentAudioError, TooShortAudioError, UnknownEmbedderError
from tagstore.layout import Layout, normalise_blocks


class ToyEmbedder(Embedder):
    """8 kHz, 1-s windows, 0.5-s hop; embedding = [rms, peak, zero crossings, 1] (deterministic)."""

    name = "toy"
    sample_rate = 8000
    dim = 4
    window_s = 1.0
    hop_s = 0.5

    def __init__(self, scale: str = "1") -> None:
        self.scale = float(scale)
        self.calls: list[int] = []

    @property
    def options(self) -> dict[str, str]:
        return {"scale": str(self.scale)} if self.scale != 1 else {}

    def embed(self, windows: np.ndarray) -> np.ndarray:
        w = self.check_windows(windows)
        self.calls.append(w.shape[0])
        zc = np.mean(np.abs(np.diff(np.sign(w), axis=1)) > 0, axis=1)
        feats = np.stack([np.sqrt(np.mean(w**2, axis=1)), np.max(np.abs(w), axis=1), zc, np.ones(len(w))], axis=1)
        return (feats * self.scale).astype(np.float32)


@pytest.fixture(autouse=True)
def _toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(embedders.REGISTRY, "toy", (f"{__name__}:ToyEmbedder", None))


def test_windower_cuts_across_chunks() -> None:
    w = _Windower(win=4, hop=2)
    x = np.arange(11, dtype=np.float32)
    out = np.concatenate([w.push(x[:3]), w.push(x[3:7]), w.push(x[7:])])
    expected = np.stack([x[i : i + 4] for i in range(0, 8, 2)])
    np.testing.assert_array_equal(out, expected)
    assert w.emitted == 4


def test_window_count_batches_and_short_padding() -> None:
    emb = TrackEmbedder.from_spec("toy")
    toy = emb.embedders[0]
    toy.batch_size = 3
    emb.embed_audio(synth("tone", 4.0, 8000), 8000)
    assert sum(toy.calls) == 7 and max(toy.calls) <= 3  # (4 s - 1 s) / 0.5 s + 1 windows
    toy.calls.clear()
    short = emb.embed_audio(synth("tone", 0.6, 8000), 8000)  # shorter than a window: padded to one
    assert toy.calls == [1] and short.vector.shape == (4,)


def test_file_and_memory_paths_agree(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "x.wav", "chord", 3.0, sr=8000)
    emb = TrackEmbedder.from_spec("toy")
    a = emb.embed_file(path).vector
    b = emb.embed_audio(synth("chord", 3.0, 8000), 8000).vector
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # file path goes through 16-bit PCM


def test_combined_layout_records_blocks_in_order(tmp_path: Path) -> None:
    emb = TrackEmbedder.from_spec("toy,dsp")
    layout = emb.layout
    assert [b.name for b in layout.blocks] == ["toy", "dsp"]
    assert layout.dim == 4 + layout.blocks[1].dim and layout.spec == "toy,dsp"
    vec = emb.embed_file(write_clip(tmp_path / "c.wav", "clicks", 3.0)).vector
    assert vec.shape == (layout.dim,) and np.all(np.isfinite(vec))
    assert Layout.from_json(layout.to_json()) == layout
    # Options travel through the spec string and change the layout digest.
    scaled = TrackEmbedder.from_spec("toy:scale=2").layout
    assert scaled.spec == "toy:scale=2.0" and scaled.digest != TrackEmbedder.from_spec("toy").layout.digest


def test_per_block_normalisation_weights_blocks_equally() -> None:
    layout = TrackEmbedder.from_spec("toy,dsp").layout
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, layout.dim)).astype(np.float32)
    x[:, :4] *= 1000  # a block with a huge scale must not dominate
    y = normalise_blocks(x, layout)
    for sl in layout.slices:
        np.testing.assert_allclose(np.linalg.norm(y[:, sl], axis=1), np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)


def test_audio_content_errors(tmp_path: Path) -> None:
    emb = TrackEmbedder.from_spec("toy")
    with pytest.raises(SilentAudioError, match="silent.wav is silent"):
        emb.embed_file(write_clip(tmp_path / "silent.wav", "silence", 2.0, sr=8000))
    with pytest.raises(TooShortAudioError, match=r"short.wav is too short \(0.10 s\)"):
        emb.embed_file(write_clip(tmp_path / "short.wav", "tone", 0.1, sr=8000))
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        emb.embed_file(write_clip(tmp_path / "empty.wav", "tone", 0.0, sr=8000))


def test_spec_errors() -> None:
    with pytest.raises(UnknownEmbedderError, match="choose from"):
        TrackEmbedder.from_spec("nope")
    with pytest.raises(UnknownEmbedderError, match="named twice"):
        TrackEmbedder.from_spec("toy,toy")
    with pytest.raises(UnknownEmbedderError, match="KEY=VALUE"):
        TrackEmbedder.from_spec("toy:scale")


def test_layout_change_needs_re_embed(tmp_path: Path, library: Path) -> None:
    from tagstore.store import Store

    store = Store.init(tmp_path / "s", embedders="toy")
    api.add(store, [library / "a"])
    before = store.embeddings([1])
    # The toy backend changes its computation: the stored layout no longer matches.
    ToyEmbedder_version = ToyEmbedder.version
    try:
        ToyEmbedder.version = property(lambda self: "2")  # type: ignore[assignment]
        with pytest.raises(LayoutMismatchError, match="rebuild --re-embed"):
            api.add(store, [library / "b"])
        record = api.rebuild(store, re_embed=True)
        assert store.layout.blocks[0].version == "2" and record.count == 6
        np.testing.assert_allclose(store.embeddings([1]), before, rtol=1e-6)
        assert len(api.add(store, [library / "b"]).added) == 6
    finally:
        ToyEmbedder.version = ToyEmbedder_version  # type: ignore[method-assign]
    # Switching embedders re-embeds every track into the new layout.
    api.rebuild(store, re_embed=True, embedders="toy,dsp")
    reopened = Store.open(store.path)
    assert reopened.layout.spec == "toy,dsp" and reopened.embeddings([1, 2]).shape == (2, reopened.layout.dim)
    assert api.info(reopened)["index"]["dim"] == reopened.layout.dim
    reopened.close()


def test_lead_in_zeros_come_before_the_first_window() -> None:
    emb = TrackEmbedder.from_spec("toy")
    toy = emb.embedders[0]
    seen: list[np.ndarray] = []
    toy.embed = lambda w: (seen.append(np.array(w)), np.zeros((len(w), 4), np.float32))[1]  # type: ignore[method-assign]
    toy.lead_in_samples = 100
    x = np.linspace(0.1, 0.9, 8000 * 2, dtype=np.float32)
    emb.embed_audio(x, 8000)
    first = seen[0][0]
    assert np.all(first[:100] == 0) and np.allclose(first[100:], x[: 8000 - 100], atol=1e-6)
    seen.clear()
    emb.embed_audio(x[:4000], 8000)  # shorter than a window: padded from the clip alone
    assert np.allclose(seen[0][0][:4000], x[:4000], atol=1e-6) and seen[0][0][4000] == seen[0][0][0]


def test_lead_out_zeros_come_after_the_track() -> None:
    """Zeros after the track give one more window when the last frames read past the end (aisfx's framing)."""
    emb = TrackEmbedder.from_spec("toy")
    toy = emb.embedders[0]
    seen: list[np.ndarray] = []
    toy.embed = lambda w: (seen.append(np.array(w)), np.zeros((len(w), 4), np.float32))[1]  # type: ignore[method-assign]
    x = np.linspace(0.1, 0.9, 11000, dtype=np.float32)  # 1.375 s: one window (a second needs 12000 samples)
    emb.embed_audio(x, 8000)
    assert sum(len(s) for s in seen) == 1
    seen.clear()
    toy.lead_out_samples = 1000  # now 12000 samples: a second window, ending in the 1000 zeros
    emb.embed_audio(x, 8000)
    windows = np.concatenate(seen)
    assert windows.shape[0] == 2 and np.all(windows[1, -1000:] == 0) and np.allclose(windows[1, :7000], x[4000:], atol=1e-6)
    seen.clear()
    emb.embed_audio(x[:4000], 8000)  # shorter than a window even with the zeros: padded from the clip alone
    assert np.allclose(seen[0][0][:4000], x[:4000], atol=1e-6) and seen[0][0][4000] == seen[0][0][0]


def test_pool_windows() -> None:
    from tagstore.embedders.base import POOLS, parse_pool, pool_windows
    from tagstore.errors import EmbedderError

    x = np.array([[1.0, -2.0], [3.0, 4.0], [2.0, 1.0]], np.float32)
    np.testing.assert_allclose(pool_windows(x, "mean"), [2.0, 1.0])
    np.testing.assert_allclose(pool_windows(x, "mean+max"), [2.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(pool_windows(x, "mean+std"), [2.0, 1.0, np.std([1, 3, 2]), np.std([-2, 4, 1])], rtol=1e-6)
    assert pool_windows(x[:1], "mean+std").tolist() == [1.0, -2.0, 0.0, 0.0] and pool_windows(x, "mean+max").dtype == np.float32
    assert parse_pool("musicnn", "Mean+Max") == "mean+max" and POOLS == {"mean": 1, "mean+max": 2, "mean+std": 2}
    with pytest.raises(EmbedderError, match="choose mean, mean"):
        parse_pool("musicnn", "median")


def test_aliases_of_weights_bundles_name_a_backend_with_options() -> None:
    from tagstore.embedders import ALIASES, parse_specs
    from tagstore.embedders.weights import BUNDLES

    assert parse_specs("vggish-pca,openl3-6144:hop=0.5") == [
        ("vggish", {"pca": "true"}), ("openl3", {"embedding_size": "6144", "hop": "0.5"})]
    assert set(ALIASES) == set(BUNDLES) - set(embedders.REGISTRY)  # every bundle listed is a name init accepts
    with pytest.raises(UnknownEmbedderError, match="named twice"):
        parse_specs("vggish,vggish-pca")


def test_plus_joins_specs_but_not_option_values() -> None:
    from tagstore.embedders import join_plus

    assert join_plus("dsp+musicnn:layer=penultimate:pool=mean+std+aisfx") == "dsp,musicnn:layer=penultimate:pool=mean+std,aisfx"
    assert join_plus("vggish-pca+openl3-6144") == "vggish-pca,openl3-6144" and join_plus("musicnn:pool=mean+max") == "musicnn:pool=mean+max"
