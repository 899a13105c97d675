"""The benchmarks run end to end in their quick mode (a smoke test: no timing is asserted).

``make test`` runs every section but the three that start the most server processes (1b node
CPU, 3 the swap storm, 4 throughput: ~55 of the ~75 s the quick run takes alone);
``make reliability`` runs them all (``FKS_BENCH_SKIP=`` empty), as ``make bench`` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = frozenset(filter(None, os.environ.get("FKS_BENCH_SKIP", "1b,3,4").split(",")))
ROWS = {
    "1": ("notify → swapped, 300 KB, default", "notify → swapped, 300 KB, JIT",
          "notify → swapped, 4 MB, default", "notify → swapped, 4 MB, JIT",
          "notify() call 300 KB (floor)", "notify() → message received (floor)",
          "sum: delivered + load 300 KB (floor)"),
    "1b": ("stale notice (served version again)", "swap, sac_actor 300 KB",
           "swap, sac_actor 4 MB", "swap, dqn 300 KB"),
    "3": ("ours (push), JIT", "ours, stale notices (control)", "seed design, tier 1 (one stat)",
          "seed design, tier 1, JIT", "seed design, tier 2 (30 files)",
          "control (no load) storm p99 / seed tier 1 storm p99",
          "ours (push), switch interval 0.5 ms"),
    "4": ("ours /sac/predict (API key, metrics)",),
    "10": ("/sac/predict (JSON, httpx) | 1", "/v2 infer, binary (tritonclient) | 256"),
}  # fmt: skip
TITLES = {
    "1": "1. notify → swap", "1b": "1b. Node CPU per publication",
    "2": "2. Freshness cost", "3": "3. Swap-storm tail", "4": "4. Throughput",
    "5": "5. Fan-out", "6": "6. Burst", "7": "7. Inference and memory", "8": "8. Architectures",
    "9": "9. Rollouts", "10": "10. Open Inference Protocol",
    "11": "11. Several models per node",
}  # fmt: skip
PLOTS = {"1": "notify_swap", "3": "swap_storm", "5": "fanout", "7": "inference"}


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(420)  # its own subprocess is bounded at 400 s; a busy machine needs > 120
def test_quick_benchmarks_write_every_section_and_plot(tmp_path: Path) -> None:
    """Each section run writes its title, its rows and its plot, and every target it has
    says met or not met; the sections left out (FKS_BENCH_SKIP) are not written."""
    out = tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "FKS_BENCH_NO_WRK": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--skip", ",".join(SKIP)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for key, title in TITLES.items():
        assert (f"## {title}" in text) is (key not in SKIP), title
    assert "load generator: bench/load.py (Python)" in text
    for key, rows in ROWS.items():
        for row in rows:
            assert (f"| {row} |" in text) is (key not in SKIP), row
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    verdicts = [line for line in targets.splitlines() if line.startswith("- ")]
    assert len(verdicts) >= (10 if not SKIP else 6)  # each target of every section run
    assert all(("met: " in v) != ("**not met**: " in v) for v in verdicts)
    for key, plot in PLOTS.items():
        png = tmp_path / "bench" / f"{plot}.png"
        assert (png.exists() and png.stat().st_size > 1000) is (key not in SKIP), plot
