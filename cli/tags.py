"""Learned tags: add-tag, tag, tags, threshold, scores, tag-examples, remove-examples, remove-tag, propagate, suggest, explain."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional
from urllib.parse import quote

import typer

from tagstore.cli import common

METHOD_HELP = (
    "auto (ensemble below 5 positives, probe from 5: the winners on real music), probe (linear probe), "
    "prototype (nearest prototype) or ensemble (both); default: the tag's choice, else auto."
)


def _list_file(path: Path) -> list[str]:
    from tagstore import api

    return api.read_list_file(path)


def add_tag(
    name: str = typer.Argument(..., help="Tag name (any text; quote it in the shell)."),
    examples: list[str] = typer.Option([], "--examples", "-e", help="Positive example: id, stored path or audio file (repeatable)."),
    negatives: list[str] = typer.Option([], "--negatives", "-x", help="Negative example (repeatable)."),
    examples_file: Optional[Path] = typer.Option(None, "--examples-file", help="File with one positive per line."),
    negatives_file: Optional[Path] = typer.Option(None, "--negatives-file", help="File with one negative per line."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help=METHOD_HELP),
    add: bool = typer.Option(False, "--add", help="Also ingest example files that are not in the store."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Predict tracks whose calibrated probability reaches this (kept by later refits)."
    ),
    precision: Optional[float] = typer.Option(
        None, "--precision", help="Lowest threshold whose expected precision (cross-validated) reaches this."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the tag summary as JSON."),
) -> None:
    """Learn a tag from a few examples (run again to add examples) and score every track."""
    pos = list(examples) + (_list_file(examples_file) if examples_file else [])
    neg = list(negatives) + (_list_file(negatives_file) if negatives_file else [])
    body = {"examples": [common.local_ref(p) for p in pos], "negatives": [common.local_ref(n) for n in neg],
            "method": method, "add_files": add}  # fmt: skip
    # a threshold rule is set in-process (the server's route does not take one)
    local = threshold is not None or precision is not None
    data = None if local else common.via_server("POST", "/api/tags/" + quote(name, safe=""), body=body)
    if data is None:
        from tagstore import api

        with common.open_store() as store:
            data = api.add_tag(store, name, pos, neg, method=method, add_files=add, threshold=threshold,
                               precision=precision).to_dict()  # fmt: skip
    summary = SimpleNamespace(**data)
    if json_out:
        common.echo_json(data)
    else:
        typer.echo(
            f"tag {summary.name}: {summary.n_pos} positive, {summary.n_neg} negative examples, {summary.method}; "
            f"{summary.predicted} of {summary.scored} tracks predicted ({_decision(summary)}) in {summary.fit_s:.2f} s"
        )


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _decision(s) -> str:  # type: ignore[no-untyped-def]
    """``rule f1, p >= 0.042, expected precision 0.80 / recall 0.60, cross-validated AP 0.47 ± 0.32``."""
    from tagstore.tags.views import rule_text

    text = f"rule {rule_text(s.rule, s.rule_value)}, p >= {_num(s.threshold_p)}"
    if s.kind == "learned":
        text += (f", expected precision {_num(s.expected_precision, '.2f')} / recall {_num(s.expected_recall, '.2f')}"
                 f", cross-validated AP {_num(s.cv_ap)} ± {_num(s.cv_ap_std)}")  # fmt: skip
    return text


def threshold(
    name: str = typer.Argument(..., help="Tag name (learned, or a model tag such as musicnn:rock)."),
    value: Optional[float] = typer.Argument(
        None, help="Probability from which a track is predicted (none: back to the default rule)."
    ),
    precision: Optional[float] = typer.Option(
        None, "--precision", help="Learned tags: the lowest threshold whose expected precision reaches this."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the tag summary as JSON."),
) -> None:
    """Set a tag's threshold (kept by later refits and ingests) and recompute which tracks carry it."""
    from tagstore import api

    with common.open_store() as store:
        s = api.threshold(store, name, value, precision)
    if json_out:
        common.echo_json(s.to_dict())
    else:
        typer.echo(f"tag {s.name}: {s.predicted} of {s.scored} tracks predicted ({_decision(s)})")


def tag(
    names: list[str] = typer.Argument(None, help="Tags to score (default: every learned tag)."),
    all_tracks: bool = typer.Option(False, "--all", help="Rescore every track, not only those missing a score."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score tracks added since the tags were learned (incremental), or all with --all."""
    result = common.via_server("POST", "/api/tag", body={"names": names or None, "all": all_tracks})
    if result is None:
        from tagstore import api

        with common.open_store() as store:
            result = api.tag(store, names or None, all_tracks=all_tracks)
    if json_out:
        common.echo_json(result)
    else:
        typer.echo(f"scored {result['tracks']} tracks for {result['tags']} tags in {result['seconds']:.2f} s")


TAG_COLUMNS = ["name", "kind", "method", "n_pos", "n_neg", "threshold", "cv_ap", "predicted", "scored", "trained_at",
               "rule", "rule_value", "threshold_p", "expected_precision", "expected_recall", "cv_ap_std"]
SCORE_COLUMNS = ["rank", "id", "path", "title", "artist", "duration_s", "score", "predicted", "probability"]
KINDS = ("learned", "model")


def tags(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only 'learned' or 'model' tags."),
    json_out: bool = common.JSON,
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
) -> None:
    """List tags: kind, examples, method, threshold rule and probability, expected precision / recall at it,
    predicted count, cross-validated AP ± its spread over folds."""
    from tagstore.tags.views import rule_text

    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out)
    if kind is not None and kind not in KINDS:
        raise typer.BadParameter(f"--kind {kind!r} is not a kind of tag; choose learned or model")
    data = common.via_server("GET", "/api/tags", {"kind": kind})
    if data is None:
        from tagstore import api

        with common.open_store() as store:
            data = [t.to_dict() for t in api.tags(store, kind=kind)]
    found = [SimpleNamespace(**t) for t in data]
    common.emit([{c: t[c] for c in TAG_COLUMNS} for t in data], fmt, TAG_COLUMNS,
                [(t.name, t.kind, t.method, t.n_pos, t.n_neg, rule_text(t.rule, t.rule_value), _num(t.threshold_p),
                  _num(t.expected_precision, ".2f"), _num(t.expected_recall, ".2f"), f"{t.predicted}/{t.scored}",
                  "n/a" if t.cv_ap is None else f"{t.cv_ap:.3f} ± {_num(t.cv_ap_std)}") for t in found],
                ["tag", "kind", "method", "pos", "neg", "rule", "p >=", "exp. precision", "exp. recall", "predicted",
                 "cv AP"])  # fmt: skip


def scores(
    name: str = typer.Argument(..., help="Tag name."),
    top: int = typer.Option(20, "--top", "-k", help="Number of tracks."),
    all_rows: bool = typer.Option(False, "--all", help="Every scored track."),
    predicted: bool = typer.Option(False, "--predicted", help="Only tracks predicted to carry the tag."),
    no_examples: bool = typer.Option(False, "--no-examples", help="Leave out the tag's own examples."),
    json_out: bool = common.JSON,
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
    m3u: bool = common.M3U,
) -> None:
    """Tracks by score for a tag, best first."""
    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out, m3u=m3u)
    data = common.via_server("GET", f"/api/tags/{quote(name, safe='')}/scores",
                             {"top": top, "all": all_rows, "predicted": predicted, "no_examples": no_examples})  # fmt: skip
    if data is None:
        from tagstore import api

        with common.open_store() as store:
            data = [r.to_dict() for r in api.scores(store, name, top=None if all_rows else top,
                                                    predicted_only=predicted, exclude_examples=no_examples)]  # fmt: skip
    rows = [SimpleNamespace(**r) for r in data]
    if fmt == "m3u":
        common.m3u((r.path, r.duration_s, r.artist, r.title) for r in rows)
        return
    common.emit(data, fmt, SCORE_COLUMNS,
                [(r.rank, r.id, r.score, _num(getattr(r, "probability", None)), "yes" if r.predicted else "", r.artist,
                  common.title_of(r.title, r.path), r.path) for r in rows],
                ["#", "id", "score", "p", "tagged", "artist", "title", "path"])  # fmt: skip


def tag_examples(name: str = typer.Argument(...), json_out: bool = typer.Option(False, "--json")) -> None:
    """List a tag's examples."""
    from tagstore import api

    with common.open_store() as store:
        rows = api.tag_examples(store, name)
    if json_out:
        common.echo_json(rows)
    else:
        common.table([(r["label"], r["id"], r["path"]) for r in rows], ["label", "id", "path"])


def remove_examples(
    name: str = typer.Argument(...),
    items: list[str] = typer.Argument(..., help="Examples to drop: ids, stored paths or outside paths."),
) -> None:
    """Drop examples from a tag and refit it."""
    from tagstore import api

    with common.open_store() as store:
        s = api.remove_examples(store, name, items)
    typer.echo(f"tag {s.name}: {s.n_pos} positive, {s.n_neg} negative examples; {s.predicted} tracks predicted")


def remove_tag(name: str = typer.Argument(...)) -> None:
    """Delete a learned tag with its examples and scores."""
    from tagstore import api

    with common.open_store() as store:
        api.remove_tag(store, name)
    typer.echo(f"removed tag {name!r}")


def _listing(rows: list[dict], fmt: str | None, extra: str) -> None:
    columns = ["id", "score", extra, "path"]
    common.emit([{c: r.get(c) for c in columns} for r in rows], fmt, columns,
                [(r["id"], r["score"], ",".join(map(str, r[extra])) if isinstance(r.get(extra), list) else r.get(extra),
                  r["path"]) for r in rows], columns)  # fmt: skip


def propagate(
    name: str = typer.Argument(...),
    k: int = typer.Option(10, "-k", help="Neighbours per positive example."),
    json_out: bool = common.JSON,
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
) -> None:
    """Suggest the tag for the nearest neighbours of its positive examples (stored as suggestions)."""
    from tagstore import api

    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out)
    with common.open_store() as store:
        _listing(api.propagate(store, name, k=k), fmt, "sources")


def suggest(
    name: str = typer.Argument(...),
    n: int = typer.Option(10, "-n", help="Number of tracks."),
    json_out: bool = common.JSON,
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
) -> None:
    """Tracks worth labelling next for a tag (near its threshold, and unlike each other)."""
    from tagstore import api

    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out)
    with common.open_store() as store:
        _listing(api.suggest(store, name, n=n), fmt, "threshold")


def explain(
    track: str = typer.Argument(..., help="Catalogue id or stored path."),
    name: str = typer.Argument(..., help="Tag name."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Why a track has its score for a tag: nearest examples and the parts of the score."""
    from tagstore import api

    with common.open_store() as store:
        data = api.explain(store, track, name)
    if json_out:
        common.echo_json(data)
        return
    typer.echo(f"{data['track']['path']} (id {data['track']['id']}) for {name!r} [{data['method']}]")
    typer.echo(f"score {data['score']:.4f}, threshold {data['threshold']:.4f}: "
               f"{'tagged' if data['predicted'] else 'not tagged'}")  # fmt: skip
    for key, value in data["parts"].items():
        typer.echo(f"  {key:<20}{value:+.4f}")
    for label in ("nearest_positive", "nearest_negative"):
        if data[label]:
            typer.echo(f"  {label.replace('_', ' ')}: " + ", ".join(f"{n['id']} ({n['cosine']:.3f})" for n in data[label]))


def register(app: typer.Typer) -> None:
    for fn in (add_tag, tag, tags, threshold, scores, tag_examples, remove_examples, remove_tag, propagate, suggest,
               explain):  # fmt: skip
        app.command(fn.__name__.replace("_", "-"))(fn)
