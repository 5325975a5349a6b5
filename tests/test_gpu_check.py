"""benchmarks/gpu_check.sh works before a GPU is at hand: its quick CPU form runs and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the GPU check needs torch (the `torch` extra)")
pytest.importorskip("faiss", reason="the GPU check compares against FAISS Flat")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_quick_cpu_run_prints_the_table() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--quick"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    checks = {line.split(" | ")[0].lstrip("| ") for line in table}
    assert {"search: FAISS Flat (faiss-cpu)", "embed: musicnn"} <= checks
    exact = next(line for line in table if line.startswith("| search: torch exact"))
    assert "same as Flat: yes" in exact
    assert any(line.startswith("| GPU tests") and "passed" in line and "failed" not in line for line in table)
    assert all(len(line.split("|")) == 6 for line in table), "a cell holds a '|' and breaks the table"


def test_gpu_check_refuses_unknown_options() -> None:
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--gpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --gpu" in done.stderr
