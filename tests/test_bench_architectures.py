"""bench/architectures.py runs end to end in a short round (a smoke test: no timing is
asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_architectures_benchmark_prints_both_tables() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.architectures", "--n", "2", "--calls", "30"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = {row.split("|")[1].strip() for row in rows}
    assert {"sac_actor 28→256→256→1", "dqn 28→256→256→3", "dqn window 8, LSTM 128"} <= names
    assert {"sac_actor: notify → swapped", "dqn: notify → swapped"} <= names
    windowed = next(row for row in rows if row.startswith("| dqn window"))
    assert "torch (LSTM)" in windowed
