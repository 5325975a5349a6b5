"""The web page in a real headless Chromium (Debian's package, driven by Playwright): search, listen, teach, map.

The page is served by uvicorn on 127.0.0.1 and a free port, in a thread, from a dsp store of synthesised
tagged clips. Screenshots go to each test's temporary folder; with ``TAGSTORE_SCREENSHOTS=DIR`` they are
also written to DIR (that is how the README's pictures under docs/ are made).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web page needs the server extra: pip install 'tagstore[server]'")
pytest.importorskip("uvicorn", reason="the browser tests serve the page with uvicorn (the server extra)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the test extra)")

from conftest import write_tagged_library  # noqa: E402
from tagstore import api  # noqa: E402

CHROMIUM = os.environ.get("TAGSTORE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test does) or set TAGSTORE_CHROMIUM",
                allow_module_level=True)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """The page on a store of 24 tagged clips, served by uvicorn in a thread; yields (base URL, store)."""
    import uvicorn
    from fastapi import FastAPI

    from tagstore.server import web

    root = write_tagged_library(tmp_path_factory.mktemp("browser") / "music", n=24)
    store = api.init(root.parent / "store", embedders="dsp")
    api.add(store, [root])
    app = FastAPI()
    web.mount(app, store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(site) -> Iterator[object]:  # type: ignore[no-untyped-def]
    with playwright_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start is a skip, with the reason
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, errors


def _shot(tab, tmp_path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / f"{name}.png"
    tab.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000
    extra = os.environ.get("TAGSTORE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path


def test_search_and_play_a_result(page, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, _ = site
    page.goto(f"{base}/#search")
    page.fill("#search-q", "harmonics")
    page.press("#search-q", "Enter")
    page.wait_for_selector("#results tbody tr")
    rows = page.locator("#results tbody tr")
    assert rows.count() == 6
    assert all(a == "The Harmonics" for a in rows.locator("td:nth-child(2)").all_inner_texts())
    page.evaluate("document.querySelector('#results tbody tr audio').play()")
    page.wait_for_function("document.querySelector('#results tbody tr audio').currentTime > 0", timeout=15_000)
    # "more like this" on a row searches by that track
    page.locator("#results tbody tr").first.locator("button.like").click()
    page.wait_for_function("document.querySelector('#search-summary').textContent.includes('similar')")
    page.wait_for_selector("#results tbody tr td:nth-child(5):not(:empty)")
    assert page.locator("#results tbody tr").count() == 23  # every other track, by similarity
    _shot(page, tmp_path, "search")


def test_teach_a_tag_by_ear(page, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, store = site
    page.goto(f"{base}/#search")
    page.fill("#search-q", "study 1")
    page.press("#search-q", "Enter")
    page.wait_for_selector("#results tbody tr")
    page.click("#teach-from-results")
    page.wait_for_selector("#view-teach:not([hidden])")
    page.fill("#teach-name", "bright")
    page.locator("#teach-name").dispatch_event("change")
    page.locator("body").click(position={"x": 5, "y": 300})  # focus off the input: keys go to the page

    def current_file() -> str:
        return str(page.evaluate("window.tagstore.teach.current.path")).rsplit("/", 1)[-1]

    # the search results come first: answer until the first yes starts the tag
    while not page.evaluate("window.tagstore.teach.exists"):
        page.keyboard.press("y" if current_file().startswith(("tone_", "chord_")) else "n")
        page.wait_for_function("!window.tagstore.teach.busy")
    queues = [page.get_attribute("#teach-queue", "data-ids")]
    for _ in range(6):
        done = page.evaluate("window.tagstore.teach.curve.length")
        page.keyboard.press("y" if current_file().startswith(("tone_", "chord_")) else "n")
        page.wait_for_function(f"window.tagstore.teach.curve.length > {done} && !window.tagstore.teach.busy")
        queues.append(page.get_attribute("#teach-queue", "data-ids"))
    assert len(set(queues)) > 1, queues  # the proposals changed with the answers
    summary = api.tags(store)
    (bright,) = [t for t in summary if t.name == "bright"]
    labels = bright.n_pos + bright.n_neg
    assert labels >= 7 and page.evaluate("window.tagstore.teach.curve.length") == labels
    assert "CV AP" in page.inner_text("#teach-stats")
    page.keyboard.press("u")
    page.wait_for_function(f"window.tagstore.teach.curve.length == {labels - 1}")
    (after,) = [t for t in api.tags(store) if t.name == "bright"]
    assert after.n_pos + after.n_neg == labels - 1
    page.keyboard.press("n" if current_file().startswith(("tone_", "chord_")) else "y")  # a wrong answer, then
    page.wait_for_function(f"window.tagstore.teach.curve.length == {labels}")
    page.keyboard.press("u")  # taken back
    page.wait_for_function(f"window.tagstore.teach.curve.length == {labels - 1} && !window.tagstore.teach.busy")
    _shot(page, tmp_path, "teach")


def test_tags_page_threshold_live_count(page, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, store = site
    if not any(t.name == "clicky" for t in api.tags(store)):
        ids = [str(t.id) for t in api.tracks(store) if Path(t.path).name.startswith("clicks_")][:3]
        api.add_tag(store, "clicky", examples=ids)
    page.goto(f"{base}/#tags")
    page.wait_for_selector("#tag-list a")
    page.click("#tag-list a:text-is('clicky')")
    page.wait_for_selector("#tag-detail:not([hidden])")
    page.wait_for_function("document.querySelector('#tag-live-count').textContent.includes('at or above')")
    assert page.locator("#tag-examples tbody tr").count() == 3
    slider = page.locator("#tag-threshold")
    ids, scores = api.tag_score_table(store, "clicky")
    ranked = np.sort(scores)
    middle = float(ranked[-8] + ranked[-9]) / 2  # eight tracks at or above (the slider snaps to 1/1000 steps)
    assert ranked[-8] - ranked[-9] > 2 * float(slider.get_attribute("step") or 0)
    slider.evaluate(f"(el) => {{ el.value = {middle}; el.dispatchEvent(new Event('input')); }}")
    page.wait_for_function("document.querySelector('#tag-live-count').textContent.startsWith('8 tracks')")
    _shot(page, tmp_path, "tags")
    low = float(slider.get_attribute("min") or 0)
    slider.evaluate(f"(el) => {{ el.value = {low}; el.dispatchEvent(new Event('input')); }}")
    page.wait_for_function("document.querySelector('#tag-live-count').textContent.startsWith('24 tracks')")
    page.click("#tag-threshold-save")
    page.wait_for_function("document.querySelector('#tag-facts').textContent.includes('predicted 24 of 24')")
    assert len(api.predicted_ids(store, "clicky")) == 24


def test_map_draws_every_track_and_plays_a_click(page, site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, store = site
    if not any(t.name == "clicky" for t in api.tags(store)):
        api.add_tag(store, "clicky", examples=[str(t.id) for t in api.tracks(store)][:2])
    page.goto(f"{base}/#map")
    page.wait_for_function("window.tagstore.map && window.tagstore.map.drawn === 24")
    page.select_option("#map-tag", "clicky")
    page.wait_for_function("window.tagstore.map.scores !== null && window.tagstore.map.drawn === 24")
    # where each point is drawn: its map coordinates fitted to the canvas (the page's own rule, restated)
    screen = page.evaluate(
        """() => { const c = document.querySelector('#map-canvas'); const r = c.getBoundingClientRect();
                   const m = window.tagstore.map; const k = c.width / r.width;
                   const s = (Math.min(c.width, c.height) / 2 - 12) / m.half;
                   return Array.from(m.ids, (id, i) => [id, r.left + (c.width / 2 + (m.x[i] - m.midX) * s) / k,
                                                          r.top + (c.height / 2 - (m.y[i] - m.midY) * s) / k]); }"""
    )
    assert len(screen) == 24
    _, x, y = screen[5]
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelector('#map-audio').currentTime > 0", timeout=15_000)
    chosen = int(page.evaluate("window.tagstore.map.selected"))
    cx, cy = next((px, py) for tid, px, py in screen if tid == chosen)
    assert (cx - x) ** 2 + (cy - y) ** 2 <= 10**2  # the clicked point, or one under the cursor with it
    assert page.evaluate("document.querySelector('#map-audio').src").endswith(f"/api/tracks/{chosen}/audio")
    page.wait_for_function(f"document.querySelector('#map-track').textContent.includes('#{chosen}')")
    _shot(page, tmp_path, "map")
