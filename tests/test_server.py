"""The resident server: the JSON API over one store (in-process), and the CLI using a real server
subprocess on 127.0.0.1 and falling back when it is gone, stale or serves another store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="the server extra (httpx, for TestClient) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from tagstore import api  # noqa: E402
from tagstore import catalogue as cat  # noqa: E402
from tagstore.server import ADDRESS_FILE, Address, read_address, write_address  # noqa: E402
from tagstore.server.app import create_app  # noqa: E402


@pytest.fixture
def filled(tmp_path: Path, library: Path):  # type: ignore[no-untyped-def]
    store = api.init(tmp_path / "store", embedders="dsp")
    report = api.add(store, [library])
    assert len(report.added) == 12
    return store


@pytest.fixture
def client(filled):  # type: ignore[no-untyped-def]
    with TestClient(create_app(api.open(filled.path))) as c:
        yield c


def test_api_answers_like_the_library(client: TestClient, filled, library: Path) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/health").json()["store"] == str(filled.path)
    info = client.get("/api/info").json()
    assert info["counts"]["tracks"] == 12 and info["index"]["count"] == 12
    tracks = client.get("/api/tracks", params={"limit": 5, "offset": 2}).json()
    assert [t["id"] for t in tracks] == [t.id for t in api.tracks(filled)][2:7]

    q, hits = api.similar(filled, "3", k=4)
    got = client.get("/api/similar", params={"track": "3", "k": 4}).json()
    assert got["query"] == {"text": "3", "id": 3, "path": q.path}
    assert [h["id"] for h in got["results"]] == [h.id for h in hits]
    assert [h["score"] for h in got["results"]] == pytest.approx([h.score for h in hits])
    by_path = client.get("/api/similar", params={"track": q.path, "k": 4}).json()
    assert [h["id"] for h in by_path["results"]] == [h.id for h in hits]

    clip = sorted((library / "a").iterdir())[0]
    _, stored_hits = api.similar(filled, str(clip), k=2)  # the stored track leaves itself out; an upload does not
    with clip.open("rb") as fh:
        up = client.post("/api/similar", files={"file": ("mine.wav", fh, "audio/wav")}, data={"k": "3"}).json()
    assert up["query"]["text"] == "mine.wav" and up["query"]["id"] is None
    own = api.tracks(filled, match=clip.name)[0].id
    assert [h["id"] for h in up["results"]] == [own, *[h.id for h in stored_hits]]
    assert up["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_tags_through_the_api(client: TestClient, filled) -> None:  # type: ignore[no-untyped-def]
    made = client.post("/api/tags/bright tone", json={"examples": ["1", "5", "9"], "negatives": ["2", "3"]})
    assert made.status_code == 200, made.text
    assert made.json()["n_pos"] == 3 and made.json()["n_neg"] == 2
    assert [t["name"] for t in client.get("/api/tags").json()] == ["bright tone"]
    scores = client.get("/api/tags/bright tone/scores", params={"top": 5}).json()
    assert [s["id"] for s in scores] == [s.id for s in api.scores(filled, "bright tone", top=5)]
    assert len(client.get("/api/tags/bright tone/scores", params={"all": "true"}).json()) == 12
    assert {e["id"] for e in client.get("/api/tags/bright tone/examples").json()} == {1, 2, 3, 5, 9}
    assert client.get("/api/similar", params={"tag": "bright tone", "k": 2}).json()["query"]["text"] == "tag:bright tone"
    scored = client.post("/api/tag", json={"all": True}).json()
    assert scored["tags"] == 1 and scored["tracks"] == 12


def test_errors_are_one_line_4xx(client: TestClient, filled) -> None:  # type: ignore[no-untyped-def]
    missing = client.get("/api/similar", params={"track": "999"})
    assert missing.status_code == 404 and missing.json()["type"] == "TrackNotFoundError"
    assert "999" in missing.json()["error"] and "\n" not in missing.json()["error"]
    assert client.get("/api/tags/nope/scores").status_code == 404
    bad = client.get("/api/similar", params={"track": "1", "k": "zero"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("k: ") and "'zero'" in bad.json()["error"]
    both = client.get("/api/similar", params={"track": "1", "tag": "x"})
    assert both.status_code == 400 and "not both" in both.json()["error"]
    other = client.get("/api/info", headers={"X-Tagstore-Store": "/some/other/store"})
    assert other.status_code == 409 and other.json()["type"] == "StoreMismatch"


def test_server_refuses_a_second_writer(client: TestClient, filled) -> None:  # type: ignore[no-untyped-def]
    with cat.WriteLock(filled.path):  # another writer holds the store's lock (flock: per open file)
        busy = client.post("/api/tags/x", json={"examples": ["1"]})
        assert busy.status_code == 409 and busy.json()["type"] == "StoreBusyError"
        assert "is writing the store" in busy.json()["error"]
        assert client.get("/api/similar", params={"track": "1", "k": 2}).status_code == 200  # reads go on
    assert client.post("/api/tags/x", json={"examples": ["1"]}).status_code == 200


def test_address_file_round_trip(tmp_path: Path) -> None:
    addr = write_address(tmp_path, "0.0.0.0", 1234)
    assert read_address(tmp_path) == addr and addr.pid == os.getpid()
    assert addr.url == "http://127.0.0.1:1234"
    (tmp_path / ADDRESS_FILE).write_text("{not json")
    assert read_address(tmp_path) is None


# --- a real server subprocess and the CLI -----------------------------------------------------------

_REPORT = (
    "import sys\n"
    "sys.argv = ['tagstore', *{args!r}]\n"
    "from tagstore.cli.main import main\n"
    "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
    "print('LOADED:' + ','.join(m for m in ('torch', 'duckdb', 'faiss', 'fastapi') if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _cli(store: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI in a fresh process; returns the process and the heavy modules it imported."""
    env = {**os.environ, "TAGSTORE_STORE": str(store)}
    proc = subprocess.run([sys.executable, "-c", _REPORT.format(args=list(args))], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("LOADED:"), proc.stderr
    proc.stderr = "\n".join(lines[:-1])
    return proc, set(filter(None, lines[-1].removeprefix("LOADED:").split(",")))


@pytest.fixture
def server(filled):  # type: ignore[no-untyped-def]
    """`tagstore serve --port 0` (a free port on 127.0.0.1) as a subprocess, stopped at the end."""
    env = {**os.environ, "TAGSTORE_STORE": str(filled.path)}
    proc = subprocess.Popen([sys.executable, "-m", "tagstore.cli.main", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while (addr := read_address(filled.path)) is None or addr.pid != proc.pid:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.1)
        assert addr.host == "127.0.0.1" and addr.port > 0
        yield proc, addr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_uses_the_server_and_falls_back(server, filled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, addr = server
    direct, loaded = _cli(filled.path, "--no-server", "query", "similar", "2", "-k", "3", "--json")
    assert direct.returncode == 0, direct.stderr
    assert "faiss" in loaded  # --no-server: answered here (from the id lookup and the index)
    served, loaded = _cli(filled.path, "query", "similar", "2", "-k", "3", "--json")
    assert served.returncode == 0, served.stderr
    assert not loaded & {"duckdb", "torch", "faiss", "fastapi"}  # answered by the server
    assert json.loads(served.stdout) == json.loads(direct.stdout)

    made, loaded = _cli(filled.path, "add-tag", "warm", "-e", "1", "-e", "4", "--json")
    assert made.returncode == 0, made.stderr
    assert "duckdb" not in loaded and json.loads(made.stdout)["n_pos"] == 2
    for args in (["tags", "--json"], ["scores", "warm", "--json"], ["info", "--json"], ["tag", "--json"]):
        out, loaded = _cli(filled.path, *args)
        assert out.returncode == 0 and "duckdb" not in loaded, (args, out.stderr)
    assert json.loads(_cli(filled.path, "tags", "--json")[0].stdout)[0]["name"] == "warm"

    with cat.WriteLock(filled.path):  # a second writer: the server's write is refused, in one line
        busy, _ = _cli(filled.path, "add-tag", "warm", "-e", "7")
    assert busy.returncode == 1 and busy.stderr.startswith("error: another process") and "\n" not in busy.stderr
    missing, _ = _cli(filled.path, "query", "similar", "999")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no track '999'")

    # A writer that does not go through the server (--no-server): the server steps aside while it commits,
    # then answers from what it wrote.
    removed, _ = _cli(filled.path, "--no-server", "remove-tag", "warm")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(_cli(filled.path, "tags", "--json")[0].stdout) == []

    # Another store whose address file names this server: the server says so, the CLI opens its own store.
    other = api.init(tmp_path / "other", embedders="dsp")
    (other.path / ADDRESS_FILE).write_text((filled.path / ADDRESS_FILE).read_text())
    mine, loaded = _cli(other.path, "info", "--json")
    assert mine.returncode == 0 and json.loads(mine.stdout)["store"] == str(other.path) and "duckdb" in loaded

    proc.kill()  # gone without cleaning up: its address file stays, naming a dead process
    proc.wait()
    assert read_address(filled.path) == addr
    after, loaded = _cli(filled.path, "query", "similar", "2", "-k", "3", "--json")
    assert after.returncode == 0 and after.stderr == "" and json.loads(after.stdout) == json.loads(direct.stdout)

    # A live process (this one) whose port is closed: also ignored silently.
    (filled.path / ADDRESS_FILE).write_text(json.dumps({**addr.__dict__, "pid": os.getpid()}))
    stale, _ = _cli(filled.path, "tags", "--json")
    assert stale.returncode == 0 and stale.stderr == "" and json.loads(stale.stdout) == []


def test_serve_refuses_a_second_server_and_warns_off_loopback(server, filled) -> None:  # type: ignore[no-untyped-def]
    proc, addr = server
    second, _ = _cli(filled.path, "serve", "--port", "0")
    assert second.returncode == 1 and f"pid {addr.pid}" in second.stderr and "already runs" in second.stderr
    from tagstore.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_help_and_serve_help_do_not_import_fastapi(tmp_path: Path) -> None:
    for args in (["--help"], ["serve", "--help"]):
        out, loaded = _cli(tmp_path, *args)
        assert out.returncode == 0 and not loaded & {"fastapi", "duckdb", "torch", "faiss"}, (args, loaded)


def test_the_page_is_mounted_and_its_routes_are_not_shadowed(client: TestClient) -> None:
    pytest.importorskip("tagstore.server.web", reason="the web page is not installed")
    assert client.get("/").status_code == 200
    assert client.app.state.store_lock is client.app.state.resident.lock  # one lock for both sets of routes
    undo = client.post("/api/tags/nosuch/undo")  # the page's route, not add-tag of a tag named "nosuch/undo"
    assert undo.status_code == 404 and "no tag 'nosuch'" in undo.json()["error"]
    assert client.get("/api/tags").json() == []
