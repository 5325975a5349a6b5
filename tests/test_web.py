"""The web page's routes through FastAPI's TestClient: search, audio by id with ranges, teaching, thresholds, map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web page needs the server extra: pip install 'tagstore[server]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the test extra)")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from conftest import write_clip, write_tagged_library  # noqa: E402
from tagstore import api  # noqa: E402
from tagstore.server import web  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A dsp store of 16 tagged FLAC clips plus one AIFF (which browsers cannot play), and a client."""
    root = write_tagged_library(tmp_path_factory.mktemp("web") / "music")
    write_clip(root / "odd" / "aiff_tone.aiff", "tone", seconds=1.5, seed=7, format="AIFF")
    store = api.init(root.parent / "store", embedders="dsp")
    api.add(store, [root])
    app = FastAPI()
    web.mount(app, store)
    return store, TestClient(app)


def _by_file(store, name: str) -> int:  # type: ignore[no-untyped-def]
    (track,) = [t for t in api.tracks(store) if Path(t.path).name == name]
    return track.id


def test_page_and_static_files(served) -> None:  # type: ignore[no-untyped-def]
    _, client = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/web/app.js">' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/web/{name}").status_code == 200


def test_text_search_matches_every_word_in_title_artist_album_path(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    answer = client.get("/api/search", params={"q": "harmonics study"}).json()
    names = sorted(Path(h["path"]).name for h in answer["results"])
    assert names == ["tone_00.flac", "tone_04.flac", "tone_08.flac", "tone_12.flac"]
    hit = answer["results"][0]
    assert hit["artist"] == "The Harmonics" and hit["title"].startswith("Tone study") and hit["score"] is None
    assert hit["duration_s"] > 1.9
    by_path = client.get("/api/search", params={"q": "aiff_"}).json()["results"]
    assert [Path(h["path"]).name for h in by_path] == ["aiff_tone.aiff"]
    assert client.get("/api/search", params={"q": "100%"}).json()["results"] == []  # % is a character, not a wildcard


def test_similar_search_by_id_and_filters(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    seed = _by_file(store, "noise_02.flac")
    hits = client.get("/api/search", params={"mode": "similar", "track": seed, "k": 5}).json()["results"]
    assert len(hits) == 5 and seed not in [h["id"] for h in hits]
    assert hits == sorted(hits, key=lambda h: -h["score"])
    api.add_tag(store, "web-noisy", examples=[str(seed), str(_by_file(store, "noise_06.flac"))])
    predicted = set(api.predicted_ids(store, "web-noisy").tolist())
    without = client.get("/api/search", params={"mode": "similar", "track": seed, "k": 20, "without": "web-noisy"}).json()
    assert without["results"] and not predicted & {h["id"] for h in without["results"]}
    within = client.get("/api/search", params={"q": "", "k": 50, "with": "web-noisy"}).json()["results"]
    assert {h["id"] for h in within} == predicted
    ranked = client.get("/api/search", params={"mode": "tag", "tag": "web-noisy", "k": 3}).json()["results"]
    assert [h["score"] for h in ranked] == sorted((h["score"] for h in ranked), reverse=True)
    top = api.scores(store, "web-noisy", top=3)
    assert [h["id"] for h in ranked] == [s.id for s in top]


def test_similar_search_never_takes_a_path(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    some = api.tracks(store)[0]
    answer = client.get("/api/search", params={"mode": "similar", "track": some.path})
    assert answer.status_code == 404 and "catalogue id" in answer.json()["error"]


def test_upload_search_deletes_the_file_and_limits_size(served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import tempfile

    store, client = served
    clip = write_clip(tmp_path / "query.wav", "clicks", seconds=2.0, seed=3)
    made: list[str] = []
    real = tempfile.NamedTemporaryFile

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real(*args, **kwargs)
        made.append(handle.name)
        return handle

    monkeypatch.setattr(web.tempfile, "NamedTemporaryFile", spy)
    answer = client.post("/api/search/upload", params={"name": "query.wav", "k": 4}, content=clip.read_bytes())
    assert answer.status_code == 200, answer.text
    hits = answer.json()["results"]
    assert len(hits) == 4 and all(Path(h["path"]).name.startswith("clicks_") for h in hits[:2])
    assert made and not any(Path(m).exists() for m in made)
    monkeypatch.setattr(web, "UPLOAD_LIMIT", 1000)
    too_big = client.post("/api/search/upload", params={"name": "query.wav"}, content=clip.read_bytes())
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    assert not any(Path(m).exists() for m in made)
    assert client.post("/api/search/upload", content=b"not audio at all").status_code == 400


def test_audio_is_served_by_id_with_ranges(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    tid = _by_file(store, "chord_01.flac")
    data = Path(api.track(store, tid).path).read_bytes()
    whole = client.get(f"/api/tracks/{tid}/audio")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/flac" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/tracks/{tid}/audio", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.content == data[100:1100]
    tail = client.get(f"/api/tracks/{tid}/audio", headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]


def test_unplayable_formats_are_transcoded_to_wav(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    tid = _by_file(store, "aiff_tone.aiff")
    answer = client.get(f"/api/tracks/{tid}/audio")
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    out = tmp_path / "got.wav"
    out.write_bytes(answer.content)
    got, rate = sf.read(str(out), dtype="float32")
    original, rate0 = sf.read(api.track(store, tid).path, dtype="float32")
    assert rate == rate0 and got.shape == original.shape
    assert np.max(np.abs(got - original)) < 1e-3  # 16-bit PCM of the same samples
    ranged = client.get(f"/api/tracks/{tid}/audio", headers={"Range": "bytes=0-43"})
    assert ranged.status_code == 206 and ranged.content[:4] == b"RIFF"


@pytest.mark.parametrize(
    "segment", ["999999", "abc", "1.flac", "..", "%2Fetc%2Fpasswd", "..%2F..%2Fetc%2Fpasswd", "-1", "1e3", "%31%2F"]
)
def test_unknown_or_path_looking_ids_are_404(served, segment: str) -> None:  # type: ignore[no-untyped-def]
    _, client = served
    answer = client.get(f"/api/tracks/{segment}/audio")
    assert answer.status_code == 404
    assert "RIFF" not in answer.text and "root:" not in answer.text


def test_a_stored_path_as_id_is_404(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    path = api.tracks(store)[0].path
    from urllib.parse import quote

    assert client.get(f"/api/tracks/{quote(path, safe='')}/audio").status_code == 404
    assert client.get("/api/web/tracks/" + quote(path, safe="")).status_code == 404


def test_label_refits_and_proposals_change_then_undo(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    first = _by_file(store, "tone_00.flac")
    started = client.post("/api/tags/web-tonal/label", json={"track": first, "answer": "yes"})
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["tag"]["n_pos"] == 1 and body["tag"]["scored"] == 17
    seen = [[p["id"] for p in body["proposals"]]]
    assert first not in seen[0] and len(seen[0]) == 10
    for _ in range(5):
        proposal = client.get("/api/tags/web-tonal/suggest", params={"n": 5}).json()["proposals"][0]
        reply = "yes" if Path(proposal["path"]).name.startswith("tone_") else "no"
        body = client.post("/api/tags/web-tonal/label", json={"track": proposal["id"], "answer": reply}).json()
        seen.append([p["id"] for p in body["proposals"]])
        assert proposal["id"] not in seen[-1]
        assert body["refit_s"] > 0
    assert len({tuple(s) for s in seen}) > 1  # the proposals changed as answers came in
    assert [p["labels"] for p in body["curve"]] == [1, 2, 3, 4, 5, 6]
    assert body["tag"]["n_pos"] + body["tag"]["n_neg"] == 6
    # the stored model changed with every answer: the tag's scores are those of the last refit
    examples = {e["id"]: e["label"] for e in api.tag_examples(store, "web-tonal")}
    assert len(examples) == 6
    undone = client.post("/api/tags/web-tonal/undo").json()
    assert undone["tag"]["n_pos"] + undone["tag"]["n_neg"] == 5 and len(undone["curve"]) == 5
    assert len(api.tag_examples(store, "web-tonal")) == 5


def test_skip_is_not_proposed_again(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    client.post("/api/tags/web-skip/label", json={"track": _by_file(store, "chord_01.flac"), "answer": "yes"})
    first = client.get("/api/tags/web-skip/suggest", params={"n": 3}).json()["proposals"][0]["id"]
    after = client.post("/api/tags/web-skip/label", json={"track": first, "answer": "skip"}).json()
    assert first not in [p["id"] for p in after["proposals"]] and after["refit_s"] == 0
    assert after["tag"]["n_pos"] == 1 and after["tag"]["n_neg"] == 0
    assert client.post("/api/tags/web-skip/undo").json()["tag"]["n_pos"] == 1  # the skip undone, the tag as it was
    assert first in [p["id"] for p in client.get("/api/tags/web-skip/suggest", params={"n": 16}).json()["proposals"]]


def test_undo_of_the_first_yes_removes_the_tag(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    client.post("/api/tags/web-once/label", json={"track": _by_file(store, "clicks_03.flac"), "answer": "yes"})
    assert client.post("/api/tags/web-once/undo").json()["tag"] is None
    assert client.get("/api/tags/web-once/suggest").status_code == 404
    assert client.post("/api/tags/web-once/undo").status_code == 404


def test_label_input_errors_are_one_line_json(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    tid = _by_file(store, "chord_05.flac")
    cases = [
        ("/api/tags/web-bad/label", {"track": tid, "answer": "maybe"}, 400, "not one of"),
        ("/api/tags/web-bad/label", {"track": tid, "answer": "no"}, 404, "answer yes"),
        ("/api/tags/web-bad/label", {"track": "/etc/passwd", "answer": "yes"}, 400, "track"),
        ("/api/tags/web-bad/label", {"track": 999999, "answer": "yes"}, 404, "999999"),
        ("/api/tags/web-bad/label", {"answer": "yes"}, 400, "track"),
    ]
    for url, payload, status, words in cases:
        answer = client.post(url, json=payload)
        assert answer.status_code == status, (payload, answer.text)
        message = answer.json()["error"]
        assert words in message and "\n" not in message


def test_threshold_change_and_live_count(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    api.add_tag(store, "web-thr", examples=[str(_by_file(store, "clicks_03.flac")), str(_by_file(store, "clicks_07.flac"))])
    ids, scores = api.tag_score_table(store, "web-thr")
    cut = float(np.sort(scores)[-5])  # five tracks at or above
    assert client.get("/api/web/tags/web-thr/count", params={"threshold": cut}).json()["count"] == 5
    answer = client.put("/api/tags/web-thr/threshold", json={"threshold": cut})
    assert answer.status_code == 200 and answer.json()["tag"]["predicted"] == 5
    assert answer.json()["tag"]["threshold"] == pytest.approx(cut)
    assert set(api.predicted_ids(store, "web-thr").tolist()) == set(ids[scores >= cut].tolist())
    api.tag(store, all_tracks=True)  # a rescore keeps the new threshold: it lives in the model too
    assert len(api.predicted_ids(store, "web-thr")) == 5
    page = client.get("/api/web/tags/web-thr").json()
    assert page["tag"]["threshold"] == pytest.approx(cut) and sum(page["histogram"]["counts"]) == 17
    assert {e["label"] for e in page["examples"]} == {"positive"} and page["examples"][0]["artist"] == "Metronome Club"
    assert client.put("/api/tags/web-thr/threshold", json={"threshold": "high"}).status_code == 400
    assert client.put("/api/tags/nope/threshold", json={"threshold": 1.0}).status_code == 404


def test_map_data_covers_every_track_and_colours_by_tag(served) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    points = client.get("/api/map").json()
    ids = [t.id for t in api.tracks(store)]
    assert points["method"] == "pca" and points["ids"] == sorted(ids)
    xy = np.array([points["x"], points["y"]]).T
    assert xy.shape == (17, 2) and np.abs(xy).max() == pytest.approx(1.0, abs=1e-3)
    assert np.std(xy[:, 0]) > 0.05 and np.std(xy[:, 1]) > 0.05
    # same kind, nearby: a tone is closer to the other tones than to the noise clips on average
    kinds = {t.id: Path(t.path).name.split("_")[0] for t in api.tracks(store)}
    by_kind = {k: xy[[i for i, tid in enumerate(points["ids"]) if kinds[tid] == k]] for k in ("tone", "noise")}
    within = np.linalg.norm(by_kind["tone"][:, None] - by_kind["tone"][None], axis=2).mean()
    across = np.linalg.norm(by_kind["tone"][:, None] - by_kind["noise"][None], axis=2).mean()
    assert within < across
    api.add_tag(store, "web-map", examples=[str(_by_file(store, "tone_04.flac"))])
    coloured = client.get("/api/map/scores", params={"tag": "web-map"}).json()
    table = dict(zip(*(a.tolist() for a in api.tag_score_table(store, "web-map"))))
    assert coloured["scores"] == [pytest.approx(table[i], abs=1e-4) for i in points["ids"]]
    assert client.get("/api/map", params={"method": "tsne"}).status_code == 400
    assert client.get("/api/map/scores", params={"tag": "nope"}).status_code == 404


def test_map_follows_the_catalogue(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, client = served
    before = client.get("/api/map").json()
    late = write_clip(tmp_path / "late" / "late_tone.wav", "tone", seconds=2.0, seed=55)
    api.add(store, [late])
    try:
        after = client.get("/api/map").json()
        assert len(after["ids"]) == len(before["ids"]) + 1 and after["generation"] > before["generation"]
    finally:
        api.remove(store, [str(late)])
