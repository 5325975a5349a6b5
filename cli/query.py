"""`tagstore query similar`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import typer

from tagstore.cli import common

app = typer.Typer(help="Search the store.", no_args_is_help=True)


@app.command()
def similar(
    track: Optional[str] = typer.Argument(None, help="A catalogue id, a stored path, or an audio file (embedded on the fly)."),
    k: int = typer.Option(10, "-k", "--top", help="Number of results."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Search from a learned tag's prototype instead of a track."),
    with_tag: list[str] = typer.Option([], "--with-tag", help="Only tracks predicted to carry this tag (repeatable)."),
    without_tag: list[str] = typer.Option([], "--without-tag", help="Leave out tracks predicted to carry this tag (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: {query, results}."),
    nl_out: bool = common.NL,
    csv_out: bool = common.CSV,
    tsv_out: bool = common.TSV,
    m3u: bool = typer.Option(False, "--m3u", help="Print an M3U playlist (the query track first when stored)."),
) -> None:
    """Tracks most similar to TRACK, by cosine similarity of their embeddings."""
    fmt = common.output_format(json=json_out, nl=nl_out, csv=csv_out, tsv=tsv_out, m3u=m3u)
    if (track is None) == (tag is None):
        raise typer.BadParameter("give a TRACK to search from, or --tag NAME (not both)")
    from tagstore import values

    k = values.count(k, "-k")  # before any path: the server, the id lookup and the catalogue all get a sane k
    data = common.via_server("GET", "/api/similar", {"track": None if track is None else common.local_ref(track),
                             "tag": tag, "k": k, "with_tag": with_tag, "without_tag": without_tag})  # fmt: skip
    by_id = track is not None and track.strip().isascii() and track.strip().isdigit() and not (with_tag or without_tag)
    if data is None and by_id and k >= 1:
        from tagstore.derived import lookup  # no catalogue connection: the cost follows the answer

        data = lookup.similar_by_id(common.store_path(), int(track.strip()), k, text=track)
    if data is None:
        from tagstore import api

        with common.open_store() as store:
            q, found = api.similar(store, track, k=k, tag=tag, with_tags=with_tag, without_tags=without_tag)
            if by_id:
                api.refresh_lookup(store)  # so that the next query by id skips the catalogue
        data = {"query": {"text": q.text, "id": q.track_id, "path": q.path}, "results": [h.to_dict() for h in found]}
    query, hits = data["query"], [SimpleNamespace(**h) for h in data["results"]]
    if fmt == "m3u":
        entries = []
        if query["id"] is not None:  # the query track first, titled like the rest (a playlist is worth a lookup)
            with common.open_store() as store:
                q_track = store.find(query["id"])
            if q_track is not None:
                entries.append((q_track.path, q_track.duration_s, q_track.artist, q_track.title))
        common.m3u(entries + [(h.path, h.duration_s, h.artist, h.title) for h in hits])
        return
    common.emit(data["results"], fmt, HIT_COLUMNS,
                [(h.rank, h.id, h.score, h.artist, common.title_of(h.title, h.path), h.path) for h in hits],
                ["#", "id", "score", "artist", "title", "path"], json_data=data)  # fmt: skip


HIT_COLUMNS = ["rank", "id", "path", "title", "artist", "album", "duration_s", "score"]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="query")
