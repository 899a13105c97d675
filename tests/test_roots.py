"""The tier resolution's order of checkpoints (subscriber/roots.py)."""

from __future__ import annotations

import os
from pathlib import Path

from subscriber.roots import checkpoints_newest_first, newest_checkpoint


def test_equal_mtimes_rank_model_10_above_model_9(tmp_path: Path) -> None:
    """Files with one mtime rank by name with numbers compared as numbers: model_10 > model_9."""
    names = ["model_9.pt", "model_10.pt", "model_2.pt", "model_100.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(1_700_000_000_000_000_000,) * 2)
    ordered = [p.name for p in checkpoints_newest_first(tmp_path)]
    assert ordered == ["model_100.pt", "model_10.pt", "model_9.pt", "model_2.pt"]
    assert newest_checkpoint(tmp_path) == tmp_path / "model_100.pt"


def test_a_newer_mtime_still_wins_over_a_larger_number(tmp_path: Path) -> None:
    """The mtime decides first; the name only breaks ties."""
    for name, ns in (("model_10.pt", 1), ("model_9.pt", 2)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(ns * 10**18, ns * 10**18))
    assert [p.name for p in checkpoints_newest_first(tmp_path)] == ["model_9.pt", "model_10.pt"]
