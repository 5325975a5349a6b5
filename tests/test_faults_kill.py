"""A crashing machine, as tests: random SIGKILLs of real `tagstore` processes during add, rebuild, add-tag, tag
and remove; writes under a file size limit (a full disk); concurrent `init`s of one folder.

After every kill the store opens with tracks and embeddings paired, no duplicates and no orphan rows;
after the next writing command, every learned tag is scored for every track, nothing is pending, and
the index verifies in full and equals an exact search. ``TAGSTORE_KILLS`` sets the number of kills
(default 30, the CI run).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from _faults import TAGSTORE, assert_complete, assert_consistent, build_store, clips, copy_store, env, run

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("TAGSTORE_KILLS") or 30)


def _ids(path: Path) -> list[int]:
    from tagstore import catalogue as cat

    with cat.reading(path) as con:
        return [r[0] for r in con.execute("SELECT id FROM tracks ORDER BY id").fetchall()]


def test_random_kills_never_break_the_store(tmp_path: Path) -> None:
    rng = random.Random(10)
    path = build_store(tmp_path, n=8)
    kills, attempts, next_clip = 0, 0, 300
    done: dict[str, int] = {}
    while kills < KILLS and attempts < 4 * KILLS:
        attempts += 1
        ids = _ids(path)
        op = rng.choice(["add", "add", "rebuild", "add-tag", "tag", "remove"])
        if op == "add":
            folder = tmp_path / f"new{attempts}"
            clips(folder, 3, start=next_clip, seconds=2.0)
            next_clip += 3
            args = ["add", folder]
        elif op == "rebuild":
            args = ["rebuild"]
        elif op == "add-tag":
            a, b = rng.sample(ids, 2)
            args = ["add-tag", f"t{attempts % 3}", "-e", a, "-e", b]
        elif op == "tag":
            args = ["tag", "--all"]
        else:
            spare = [i for i in ids if i > 3]
            if len(spare) < 2:
                continue
            args = ["remove", rng.choice(spare)]
        proc = subprocess.Popen([TAGSTORE, "--store", path, *map(str, args)], env=env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.2, 1.2))  # commands take 0.4-2 s: warm bytecode and a quiet machine make them quick
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            done[op] = done.get(op, 0) + 1
        _, err = proc.communicate(timeout=120)
        assert b"Traceback" not in err, err.decode()
        assert_consistent(path)
        if attempts % 8 == 0:
            finished = run(["--store", path, "tag"], tmp_path)  # any writing command completes what is pending
            assert finished.returncode == 0, finished.stderr
            assert_complete(path)
    assert kills >= KILLS, (kills, attempts, done)
    finished = run(["--store", path, "tag"], tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert_complete(path)


def _limited(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _temps(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.name.endswith((".tmp", ".init"))]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("small"), n=6)


@pytest.mark.parametrize("command", ["add", "add-tag", "remove", "rebuild", "init"])
def test_a_full_disk_gives_one_line_and_loses_nothing(small_store: Path, tmp_path: Path, command: str) -> None:
    path = copy_store(small_store, tmp_path / "store")
    new = tmp_path / "new"
    clips(new, 3, start=400)
    args = {"add": ["add", new], "add-tag": ["add-tag", "more", "-e", "1", "-e", "4"], "remove": ["remove", "5"],
            "rebuild": ["rebuild"], "init": ["init", tmp_path / "other"]}[command]  # fmt: skip
    target = tmp_path / "other" if command == "init" else path
    full = run(["--store", path, *args], tmp_path, preexec_fn=_limited(4096))
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "file size limit" in errors[0], lines
    assert not _temps(target), _temps(target)
    if command == "init":
        assert not (target / "catalogue.duckdb").exists()
    else:
        assert_consistent(path)
    # The same command again (a remove that committed before its index step failed: any writing command).
    again = run(["--store", path, *(["tag"] if command == "remove" else args)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert_complete(target if command != "init" else path)


def test_concurrent_inits_give_one_store_and_one_clear_refusal(tmp_path: Path) -> None:
    for trial in range(2):
        target = tmp_path / f"store{trial}"
        procs = [subprocess.Popen([TAGSTORE, "init", str(target)], env=env(tmp_path), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        created = [r for r in results if r[0] == 0]
        assert len(created) == 1 and "created store" in created[0][1], results
        for rc, _, err in results:
            assert "Traceback" not in err
            if rc:
                assert rc == 1 and err.strip().splitlines() == [err.strip()] and "already exists" in err, err
        assert_complete(target)
