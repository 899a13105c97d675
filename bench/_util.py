"""Checkpoints, percentiles and plain-text tables for the benchmarks.

torch is imported only where a checkpoint is made: ``bench/load.py`` (a process started for
every load run) imports this module and would otherwise pay ~2 s of torch import each time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.checkpoint import SavedCheckpoint
    from common.policy import PolicyConfig


def make_checkpoint(
    root: Path, version: int, *, name: str | None = None, config: PolicyConfig | None = None
) -> SavedCheckpoint:
    """A random actor saved as ``model_<version>.safetensors`` (what ``fks train`` writes; or
    ``name``) in ``root``."""
    import torch

    from common.checkpoint import save_checkpoint
    from common.policy import SACActor

    torch.manual_seed(version)
    return save_checkpoint(
        root / (name or f"model_{version}.safetensors"), SACActor(config), version=version
    )


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean of seconds, in milliseconds."""
    ms = [v * 1e3 for v in values]
    return {
        "p50": pct(ms, 50),
        "p90": pct(ms, 90),
        "p99": pct(ms, 99),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (also readable on a terminal)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
