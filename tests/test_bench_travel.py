"""bench/travel.py runs end to end in one round (a smoke test: no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_travel_benchmark_measures_the_six_cases() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.travel", "--n", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    cases = {tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows}
    assert cases == {
        (size, transport)
        for size in ("300 KB", "4 MB")
        for transport in ("local file", "S3 (moto)", "Redis blob")
    }
