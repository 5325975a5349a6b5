"""The web page's routes at catalogue scale: search, the labelling loop, thresholds and the map.

    python benchmarks/bench_web.py --tracks 100000 --dim 512 --answers 20 [--browser] [--screenshot docs/map-100k.png]

A store of ``--tracks`` synthetic seeded vectors (a mixture of 24 clusters, so the map has shape) under a
``--dim``-d layout, with titles and artists, written straight into the catalogue as bench_store.py does.
Every route is timed through FastAPI's TestClient on the app `tagstore serve` runs (the resident store:
one catalogue connection kept open; routing, JSON and the library call; no network), each request on its
own, after one warm-up. The labelling loop is the page's: a tag started from one "yes",
then ``--answers`` answers, each a POST that refits the tag, rescores every track, saves, and returns the
next proposals (the first proposal is answered by its cluster; every fourth answer is a "yes" to a track
of the seed's cluster found by "more like this", as a user adds positives from a search). ``--browser`` also opens the map in headless Chromium (Debian's package, via Playwright)
served by uvicorn, and reports the time until all points are drawn and the draw itself.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tagstore import api
from tagstore import catalogue as cat
from tagstore.layout import Block, Layout
from tagstore.store import Store


def clustered_store(path: Path, n: int, dim: int, clusters: int = 24, seed: int = 0) -> Store:
    """A store of ``n`` tracks whose ``dim``-d vectors come from ``clusters`` seeded Gaussian clusters."""
    store = Store.init(path, embedders="dsp")
    layout = Layout((Block("synthetic", "1", dim, 16000, 1.0, 1.0, {}),))
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 1.5
    ids = np.arange(1, n + 1, dtype=np.int64)
    chunk = 20000
    with cat.transaction(path) as con:
        cat.set_meta(con, "layout", layout.to_json())
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            which = rng.integers(0, clusters, sl.stop - sl.start)
            vecs = centres[which] + rng.standard_normal((sl.stop - sl.start, dim), dtype=np.float32)
            blobs = np.empty(sl.stop - sl.start, dtype=object)
            blobs[:] = [v.tobytes() for v in vecs.astype(np.float32)]
            con.register("part", {"id": ids[sl], "v": blobs, "c": which.astype(np.int64)})
            con.execute(
                """INSERT INTO tracks (id, path, content_hash, size_bytes, mtime_ns, duration_s, sample_rate,
                       channels, title, artist, album)
                   SELECT id, '/music/track' || id || '.flac', 'sha256:' || id, 0, 0, 180.0, 44100, 2,
                          'Title ' || id, 'Artist ' || (id % 500), 'Cluster ' || c FROM part"""
            )
            con.execute("INSERT INTO embeddings SELECT id, ?, v::BLOB FROM part", [layout.digest])
            con.unregister("part")
        cat.bump_generation(con)
    return Store.open(path)


def timed(client, method: str, url: str, **kw) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    response = client.request(method, url, **kw)
    took = time.perf_counter() - t0
    if response.status_code != 200:
        raise SystemExit(f"{method} {url}: {response.status_code} {response.text[:200]}")
    return took, response.json()


def row(name: str, times: list[float], note: str = "") -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {p95:.0f} | {ms[-1]:.0f} | {note} |"


def make_app(store: Store):  # type: ignore[no-untyped-def]
    """The app `tagstore serve` runs: the API over a resident store (one session connection, the index and
    the vector copy loaded) with the page mounted."""
    from tagstore.server.app import create_app

    return create_app(store)


def bench_routes(app, store: Store, answers: int, repeats: int) -> list[str]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    client = TestClient(app)
    rng = np.random.default_rng(1)
    n = len(api.tracks(store, limit=None))
    lines = ["| route | requests | median ms | p95 ms | max ms | note |", "|---|---|---|---|---|---|"]

    def many(method: str, urls: list[str], **kw) -> list[float]:  # type: ignore[no-untyped-def]
        timed(client, method, urls[0], **kw)  # warm-up
        return [timed(client, method, u, **kw)[0] for u in urls]

    words = [f"Artist {int(i)}" for i in rng.integers(0, 500, repeats)]
    lines.append(row("text search (`GET /api/search?q=Artist N`, k=50)", many("GET", [f"/api/search?q={w}&k=50" for w in words])))
    lines.append(row("text search, no match (full scan)", many("GET", [f"/api/search?q=zz{i}&k=50" for i in range(repeats)])))
    seeds = rng.integers(1, n + 1, repeats)
    lines.append(row("more like this (`mode=similar`, k=50)", many("GET", [f"/api/search?mode=similar&track={s}&k=50" for s in seeds])))

    # the labelling loop: one yes starts the tag, then the page's answers, each refitting the tag
    t_start, body = timed(client, "POST", "/api/tags/bench/label", json={"track": int(seeds[0]), "answer": "yes"})
    mine = api.track(store, int(seeds[0])).album
    # the user's other yeses come from a search ("more like this" on the seed), one in four answers
    _, similar = timed(client, "GET", f"/api/search?mode=similar&track={int(seeds[0])}&k=50")
    found = [h["id"] for h in similar["results"] if h["album"] == mine]
    loop, refits = [], []
    for i in range(answers):
        proposal = body["proposals"][0]
        if i % 4 == 3 and found:
            track, reply = found.pop(0), "yes"
        else:
            track, reply = proposal["id"], "yes" if proposal["album"] == mine else "no"
        took, body = timed(client, "POST", "/api/tags/bench/label", json={"track": track, "answer": reply})
        loop.append(took)
        refits.append(body["refit_s"])
    tag = body["tag"]
    lines.append(row("start a tag from one yes (`POST /api/tags/NAME/label`)", [t_start], "first fit"))
    lines.append(row("answer yes/no (`POST .../label`: refit, rescore all, save, propose 10)", loop,
                     f"{tag['n_pos']} yes / {tag['n_neg']} no at the end, CV AP {tag['cv_ap'] or float('nan'):.2f}"))
    lines.append(row("  of which refit + save (`refit_s` in the answer)", refits))
    lines.append(row("skip (`POST .../label`, no refit)", many("POST", ["/api/tags/bench/label"] * repeats,
                                                               json={"track": int(seeds[1]), "answer": "skip"})))
    lines.append(row("proposals (`GET .../suggest?n=10`)", many("GET", ["/api/tags/bench/suggest?n=10"] * repeats)))
    undo = []
    for _ in range(min(5, answers)):
        undo.append(timed(client, "POST", "/api/tags/bench/undo")[0])
    lines.append(row("undo the last answer (`POST .../undo`: refit)", undo))
    lines.append(row("tag search (`mode=tag`, k=50)", many("GET", ["/api/search?mode=tag&tag=bench&k=50"] * repeats)))
    lines.append(row("live count at a threshold (`GET /api/web/tags/NAME/count`)",
                     many("GET", [f"/api/web/tags/bench/count?threshold={t:.3f}" for t in rng.uniform(-2, 2, repeats)])))
    lines.append(row("set the threshold (`PUT .../threshold`)", many("PUT", ["/api/tags/bench/threshold"] * 3, json={"threshold": 0.5})))
    lines.append(row("a tag's page (`GET /api/web/tags/NAME`)", many("GET", ["/api/web/tags/bench"] * repeats)))
    first, points = timed(client, "GET", "/api/map")
    size = len(json.dumps(points))
    lines.append(row("map, first (`GET /api/map`: PCA of every track)", [first], f"{len(points['ids']):,} points, {size / 1e6:.1f} MB JSON"))
    lines.append(row("map, kept (same generation)", many("GET", ["/api/map"] * 3)))
    lines.append(row("map colours (`GET /api/map/scores?tag=`)", many("GET", ["/api/map/scores?tag=bench"] * 3)))
    return lines


def bench_scoring(store: Store, repeats: int) -> list[str]:
    """One tag's scoring pass over every stored vector (one BLAS thread), in chunks of the old size and of
    SCORE_CHUNK; both give the same scores."""
    from tagstore.derived.matrix import matrix
    from tagstore.learning import model as model_module
    from tagstore.learning import score_tags
    from tagstore.catalogue import tags as tag_sql

    with store.write_lock():
        mat = matrix(store)
    with store.reader() as con:
        ((_, _, blob),) = tag_sql.learned_models(con, ["bench"])
    tag_model = model_module.TagModel.from_bytes(blob)
    lines = ["| scoring every track for one tag | rows per chunk | median ms | min ms |", "|---|---|---|---|"]
    kept = model_module.SCORE_CHUNK
    times: dict[int, list[float]] = {16384: [], kept: []}
    results = {}
    try:
        for _ in range(repeats):  # alternating, so a change in the machine's load hits both alike
            for chunk in times:
                model_module.SCORE_CHUNK = chunk
                t0 = time.perf_counter()
                results[chunk] = score_tags([tag_model], mat.vectors)
                times[chunk].append(time.perf_counter() - t0)
    finally:
        model_module.SCORE_CHUNK = kept
    assert np.allclose(results[16384], results[kept], rtol=1e-5, atol=1e-4)
    for chunk, ts in times.items():
        note = " (the old size)" if chunk == 16384 else " (SCORE_CHUNK)"
        lines.append(f"| {len(mat.ids):,} x {mat.vectors.shape[1]} | {chunk}{note} | {statistics.median(ts) * 1000:.0f} | {min(ts) * 1000:.0f} |")
    return lines


def bench_browser(app, screenshot: str | None) -> list[str]:  # type: ignore[no-untyped-def]
    import uvicorn
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    chromium = os.environ.get("TAGSTORE_CHROMIUM", "/usr/bin/chromium")
    lines = ["| map in Chromium | points | ms |", "|---|---|---|"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/#tags")  # the page loaded, not yet the map
            page.wait_for_selector("#tag-list a")
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/#map")
            page.wait_for_function("window.tagstore.map && window.tagstore.map.drawn > 0", timeout=120_000)
            shown = time.perf_counter() - t0
            drawn, draw_ms = page.evaluate("[window.tagstore.map.drawn, window.tagstore.map.drawMs]")
            page.select_option("#map-tag", "bench")
            page.wait_for_function("window.tagstore.map.scores !== null", timeout=60_000)
            page.wait_for_timeout(300)
            coloured_ms = page.evaluate("window.tagstore.map.drawMs")
            redraws = page.evaluate("""() => { const t = []; for (let i = 0; i < 5; i++) { drawMap(); t.push(window.tagstore.map.drawMs); }
                                               return t.sort((a, b) => a - b)[2]; }""")
            lines.append(f"| open the map view until drawn (fetch, parse, draw) | {drawn:,} | {shown * 1000:.0f} |")
            lines.append(f"| one draw (canvas ImageData), plain / coloured by a tag | {drawn:,} | {draw_ms:.0f} / {coloured_ms:.0f} |")
            lines.append(f"| redraw (pan or zoom), median of 5 | {drawn:,} | {redraws:.0f} |")
            if screenshot:
                page.screenshot(path=screenshot)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--answers", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--browser", action="store_true", help="also draw the map in headless Chromium")
    ap.add_argument("--screenshot", help="with --browser: save the coloured map here (PNG)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = clustered_store(Path(tmp) / "s", args.tracks, args.dim)
        api.rebuild(store)
        print(f"store of {args.tracks:,} x {args.dim} built and indexed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        app = make_app(store)
        print("\n".join(bench_routes(app, store, args.answers, args.repeats)))
        print()
        print("\n".join(bench_scoring(store, 5)))
        if args.browser:
            print()
            print("\n".join(bench_browser(app, args.screenshot)))


if __name__ == "__main__":
    main()
