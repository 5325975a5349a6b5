"""Few-shot evaluation: metrics equal scikit-learn's, draws by track from train only, cached eval stores,
skipped embedders, dropped clips, and the demo-corpus / eval commands."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

pytest.importorskip("pretty_midi", reason="the demo corpus needs the 'corpus' extra")
pytest.importorskip("midirenderer", reason="the demo corpus needs the 'corpus' extra")

from tagstore.corpus import make_corpus  # noqa: E402
from tagstore.evaluation.labels import read_labels  # noqa: E402
from tagstore.errors import InputError, UnknownEmbedderError  # noqa: E402
from tagstore.evaluation import evaluate  # noqa: E402

SHOTS = (1, 2, 5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthesised clips of 3 s (13 tracks, split by track); returns labels.csv."""
    out = tmp_path_factory.mktemp("corpus")
    return make_corpus(out, n_clips=24, seed=0, clip_s=3.0, sample_rate=16000, workers=1).labels_csv


@pytest.fixture(scope="module")
def first(corpus: Path):  # type: ignore[no-untyped-def]
    """The first run on the corpus: embeds every clip into a fresh dsp eval store."""
    return evaluate(corpus, ["dsp"], shots=SHOTS, draws=2, keep_fits=True)


class _Warnings(logging.Handler):
    """Collects the warnings of the "tagstore" logger (the CLI may have stopped it propagating)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> list[str]:
        logging.getLogger("tagstore").addHandler(self)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("tagstore").removeHandler(self)


def _rows(labels: Path) -> dict[str, tuple[str, frozenset[str], str]]:
    """Resolved path → (track, tags, split), read independently of the module under test."""
    base = labels.parent.resolve()
    return {str((base / r.path).resolve()): (r.track, frozenset(r.tags), r.split) for r in read_labels(labels)}


def test_metrics_equal_scikit_learn(first) -> None:  # type: ignore[no-untyped-def]
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn (test extra) checks the metrics")
    plan = first.plan
    assert first.fits and len(first.fits) == len(first.results)
    per_draw: dict[tuple, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    by_key = {(r.embedder, r.method, r.k, r.draw, r.tag): r for r in first.results}
    for fit in first.fits:
        y = plan.truth(fit.draw.tag)
        assert 0 < y.sum() < len(y)
        ap = sk.average_precision_score(y, fit.scores)
        auc = sk.roc_auc_score(y, fit.scores)
        r = by_key[(fit.embedder, fit.method, fit.draw.k, fit.draw.draw, fit.draw.tag)]
        assert r.ap == pytest.approx(ap, abs=1e-12) and r.auc == pytest.approx(auc, abs=1e-12)
        assert np.isfinite(fit.threshold)  # F1 of the fit's own decision on the test split
        assert r.f1 == pytest.approx(sk.f1_score(y, fit.scores >= fit.threshold, zero_division=0.0), abs=1e-12)
        per_draw[(fit.embedder, fit.method, fit.draw.k)][fit.draw.draw].append((ap, auc))
    assert {(p.embedder, p.method, p.k) for p in first.curves} == set(per_draw)
    for p in first.curves:
        draws = per_draw[(p.embedder, p.method, p.k)]
        macro = np.array([np.mean(v, axis=0) for v in draws.values()])  # (draws, 2): macro over tags
        assert p.n_tags == len(plan.tags) and p.n_draws == len(draws)
        assert p.ap_mean == pytest.approx(macro[:, 0].mean()) and p.ap_std == pytest.approx(macro[:, 0].std())
        assert p.auc_mean == pytest.approx(macro[:, 1].mean()) and p.auc_std == pytest.approx(macro[:, 1].std())
        assert 0.0 <= p.f1_mean <= 1.0


def test_draws_are_grouped_by_track_and_never_touch_the_test_split(first, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(corpus)
    test = {p for p, (_, _, split) in rows.items() if split == "test"}
    assert set(first.plan.eval_ids) == test
    methods_at = defaultdict(set)
    for fit in first.fits:
        d = fit.draw
        seen = set(d.pos_ids) | set(d.neg_ids) | set(fit.unlabelled_ids)
        assert seen.isdisjoint(test), "a fit saw a test clip"
        assert all(d.tag in rows[i][1] for i in d.pos_ids) and not any(d.tag in rows[i][1] for i in d.neg_ids)
        assert not (set(d.pos_ids) | set(d.neg_ids)) & set(fit.unlabelled_ids)
        pos_tracks = {rows[i][0] for i, (_, tags, split) in rows.items() if split == "train" and d.tag in tags}
        if d.k is not None:
            assert len(d.pos_ids) == min(d.k, sum(d.tag in rows[i][1] for i in rows if rows[i][2] == "train"))
            assert len({rows[i][0] for i in d.pos_ids}) == min(len(d.pos_ids), len(pos_tracks))  # distinct first
            assert len(d.neg_ids) == min(d.k, sum(d.tag not in t for _, t, s in rows.values() if s == "train"))
        methods_at[d.k].add(fit.method)
    assert methods_at[None] == {"probe", "prototype", "ensemble"}  # the full-train ceiling
    assert {e.spec: e.embedded for e in first.embedders} == {"dsp": 24}


def test_the_eval_store_is_reused(first, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    again = evaluate(corpus, ["dsp"], shots=(1,), draws=1, methods=["prototype"])
    (run,) = again.embedders
    assert run.embedded == 0 and run.embed_s == 0.0 and run.clips == 24
    assert run.store == first.embedders[0].store == str(corpus.parent / ".tagstore-eval" / "dsp")
    assert {p.method for p in again.curves} == {"prototype", "probe"}  # probe: the full-train ceiling only
    assert {p.k for p in again.curves if p.method == "probe"} == {None}


def test_worker_processes_give_the_same_results(first, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    kw = dict(shots=(1, 5), draws=1, methods=["prototype", "ensemble"], keep_fits=True)
    one, two = evaluate(corpus, ["dsp"], workers=1, **kw), evaluate(corpus, ["dsp"], workers=2, **kw)
    assert one.results == two.results and one.curves == two.curves and len(one.fits) == len(two.fits)
    for a, b in zip(one.fits, two.fits):
        assert (a.draw, a.method, a.unlabelled_ids) == (b.draw, b.method, b.unlabelled_ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert one.embedders[0].fits == two.embedders[0].fits == len(one.results)


def test_missing_embedder_is_skipped_with_a_warning(first, corpus: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TAGSTORE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    with _Warnings() as lines:
        result = evaluate(corpus, ["dsp", "musicnn"], shots=(1,), draws=1, methods=["prototype"])
    assert [e.spec for e in result.embedders] == ["dsp"] and list(result.skipped_embedders) == ["musicnn"]
    (line,) = [m for m in lines if "musicnn" in m]
    assert line.startswith("skipping embedder musicnn") and "\n" not in line
    if "weights" in line:
        assert "tagstore models fetch musicnn" in line
    with pytest.raises(UnknownEmbedderError, match="nosuch"):
        evaluate(corpus, ["nosuch"], shots=(1,), draws=1)


def test_a_clip_that_fails_to_embed_is_dropped(first, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    broken = corpus.parent / "audio" / "zz_broken.wav"
    broken.write_bytes(b"\x00" * 512)
    bad_csv = corpus.parent / "with_broken.csv"
    text = corpus.read_text()
    bad_csv.write_text(text + "audio/zz_broken.wav,tzz,drums;keys,train\n")
    with _Warnings() as lines:
        result = evaluate(bad_csv, ["dsp"], shots=(1,), draws=1, methods=["prototype"])
    assert [Path(d["path"]).name for d in result.dropped] == ["zz_broken.wav"]
    assert result.embedders[0].embedded == 0 and len(result.embedders[0].failed) == 1
    assert any("could not be embedded" in m for m in lines)
    assert all(str(broken.resolve()) not in d.pos_ids + d.neg_ids for d in result.plan.draws)


def test_bad_settings_and_tables(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown method"):
        evaluate(corpus, ["dsp"], methods=["svm"])
    with pytest.raises(InputError, match="shots"):
        evaluate(corpus, ["dsp"], shots=(0,))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,track,tags,split\nnope.wav,t0,a,train\n")
    with pytest.raises(InputError, match="line 2: no audio file 'nope.wav'"):
        evaluate(bad, ["dsp"])


def test_cli_demo_corpus_then_eval(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    made = cli(runner, "demo-corpus", out, "--clips", "24", "--clip-seconds", "3", "--seed", "1", "--json")
    assert made.exit_code == 0, made.output
    summary = json.loads(made.stdout)
    assert summary["clips"] == 24 and summary["train"] + summary["test"] == 24 and (out / "labels.csv").is_file()
    text = cli(runner, "demo-corpus", tmp_path / "demo2", "--clips", "4", "--clip-seconds", "3")
    assert text.exit_code == 0 and text.stdout.startswith("wrote 4 clips")

    report = tmp_path / "report"
    res = cli(runner, "eval", out / "labels.csv", "--shots", "1,2", "--draws", "2", "--methods",
              "prototype,ensemble", "--json", "--report", report)  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["report"] == str(report / "index.html") and data["tags"]
    assert {(c["method"], c["k"]) for c in data["curves"]} >= {("prototype", 1), ("ensemble", 2), ("probe", None)}
    assert all(0.0 <= c["f1_mean"] <= 1.0 for c in data["curves"])
    assert "F1 at threshold" in (report / "index.html").read_text()
    assert set(data["per_tag_ap"]) == {"dsp/ensemble", "dsp/probe", "dsp/prototype"}
    assert {p.name for p in report.iterdir()} == {"index.html", "macro_ap.png", "macro_auc.png", "eval.json"}
    assert json.loads((report / "eval.json").read_text())["curves"] == data["curves"]
    assert (report / "macro_ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = cli(runner, "eval", out / "labels.csv", "--shots", "1", "--draws", "1", "--methods", "prototype")
    assert table.exit_code == 0 and table.stdout.split("\n")[0].split()[:3] == ["embedder", "method", "K"]
    assert "F1 at threshold" in table.stdout.split("\n")[0]


@pytest.mark.parametrize("header,row,message", [
    ("path,tags,split", "audio/x.wav,a,train", "lacks column(s) track"),
    ("path,track,tags,split", "audio/missing.wav,t0,a,train", "no audio file 'audio/missing.wav'"),
])  # fmt: skip
def test_cli_bad_csv_is_one_line_error(runner, tmp_path: Path, header: str, row: str, message: str) -> None:  # type: ignore[no-untyped-def]
    labels = tmp_path / "labels.csv"
    labels.write_text(header + "\n" + row + "\n")
    res = cli(runner, "eval", labels)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and message in res.stderr and res.stderr.count("\n") == 1
    assert res.stdout == ""
