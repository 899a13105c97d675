"""The benchmarks run end to end in their quick mode (a smoke test: no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(420)  # its own subprocess is bounded at 400 s; a busy machine needs > 120
def test_quick_benchmarks_write_every_section_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "FKS_BENCH_NO_WRK": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for title in (
        "1. notify → swap", "1b. Node CPU per publication", "2. Freshness cost",
        "3. Swap-storm tail", "4. Throughput",
        "5. Fan-out", "6. Burst", "7. Inference and memory", "8. Architectures",
    ):  # fmt: skip
        assert f"## {title}" in text, title
    assert "load generator: bench/load.py (Python)" in text
    for row in (
        "notify → swapped, 300 KB, default", "notify → swapped, 300 KB, JIT",
        "notify → swapped, 4 MB, default", "notify → swapped, 4 MB, JIT",
        "notify() call 300 KB (floor)", "notify() → message received (floor)",
        "sum: delivered + load 300 KB (floor)", "ours (push), JIT", "ours, stale notices (control)",
        "seed design, tier 1 (one stat)", "seed design, tier 1, JIT",
        "seed design, tier 2 (30 files)", "control (no load) storm p99 / seed tier 1 storm p99",
        "ours (push), switch interval 0.5 ms", "stale notice (served version again)",
        "swap, sac_actor 300 KB", "swap, sac_actor 4 MB", "swap, dqn 300 KB",
        "ours /sac/predict (API key, metrics)",
    ):  # fmt: skip
        assert f"| {row} |" in text, row
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    verdicts = [line for line in targets.splitlines() if line.startswith("- ")]
    assert len(verdicts) >= 10  # each target of every section, met or not
    assert all(("met: " in v) != ("**not met**: " in v) for v in verdicts)
    for plot in ("notify_swap", "swap_storm", "fanout", "inference"):
        assert (tmp_path / "bench" / f"{plot}.png").stat().st_size > 1000
