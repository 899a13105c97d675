"""Percentiles and plain-text tables for the benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor


def make_checkpoint(
    root: Path, version: int, *, name: str | None = None, config: PolicyConfig | None = None
) -> SavedCheckpoint:
    """A random actor saved as ``model_<version>.safetensors`` (what ``fks train`` writes; or
    ``name``) in ``root``."""
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
