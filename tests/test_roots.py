"""The tier resolution's order of checkpoints (subscriber/fetching/roots.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from common import Settings
from subscriber import ModelHolder
from subscriber.fetching.roots import checkpoints_newest_first, newest_checkpoint
from subscriber.pipeline.decider import Decider
from tests.helpers import bump_mtime, write_checkpoint


@pytest.mark.parametrize(
    ("names", "newest_first"),
    [
        (
            ["model_9.pt", "model_10.pt", "model_2.pt", "model_100.pt"],
            ["model_100.pt", "model_10.pt", "model_9.pt", "model_2.pt"],
        ),
        (
            ["model_9.safetensors", "model_10.pt", "model_9.pt", "model_10.safetensors"],
            ["model_10.safetensors", "model_10.pt", "model_9.safetensors", "model_9.pt"],
        ),
    ],
    ids=["model_10-above-model_9", "across-formats"],
)
def test_equal_mtimes_rank_by_number_then_suffix(
    tmp_path: Path, names: list[str], newest_first: list[str]
) -> None:
    """Files with one mtime rank by name with numbers compared as numbers: model_10 >
    model_9, and model_10.pt is newer than model_9.safetensors; of one stem, .safetensors
    (the file `fks convert` writes) ranks above .pt."""
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(1_700_000_000_000_000_000,) * 2)
    assert [p.name for p in checkpoints_newest_first(tmp_path)] == newest_first
    assert newest_checkpoint(tmp_path) == tmp_path / newest_first[0]


def test_a_newer_mtime_still_wins_over_a_larger_number(tmp_path: Path) -> None:
    """The mtime decides first; the name only breaks ties."""
    for name, ns in (("model_10.pt", 1), ("model_9.pt", 2)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(ns * 10**18, ns * 10**18))
    assert [p.name for p in checkpoints_newest_first(tmp_path)] == ["model_9.pt", "model_10.pt"]


def test_both_formats_are_scanned_and_nothing_else(tmp_path: Path) -> None:
    """model_*.pt and model_*.safetensors are checkpoints (SPEC §8); other names are not."""
    names = ["model_1.pt", "model_2.safetensors", "model_3.pth", "model_4.safetensors.tmp",
             ".model_5.safetensors.1.ab.tmp", "other_6.safetensors", "model_7.txt"]  # fmt: skip
    for ns, name in enumerate(names, start=1):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(ns * 10**18, ns * 10**18))
    found = [p.name for p in checkpoints_newest_first(tmp_path)]
    assert found == ["model_2.safetensors", "model_1.pt"]


def test_a_cold_node_serves_the_newest_checkpoint_of_either_format(
    settings_for: Callable[..., Settings], model_root: Path
) -> None:
    """Tier 2 holds a .pt and a newer .safetensors: the .safetensors is resolved and served;
    a newer .pt then wins the fallback in turn."""
    write_checkpoint(model_root, 1)
    newer = write_checkpoint(model_root, 2, name="model_2.safetensors").path
    bump_mtime(newer)
    holder = ModelHolder(settings_for())
    assert holder.roots.resolve().path == newer
    outcome = Decider(holder).check_disk()
    assert outcome is not None and outcome.applied
    served = holder.current()
    assert served is not None and served.version == 2 and served.path == newer
    third = write_checkpoint(model_root, 3).path
    bump_mtime(third, 2.0)
    outcome = Decider(holder).check_disk()
    assert outcome is not None and outcome.applied
    assert (served := holder.current()) is not None and served.path == third


def test_a_file_the_fallback_cannot_serve_is_refused_once_with_its_reason(
    settings_for: Callable[..., Settings], model_root: Path, tmp_path: Path
) -> None:
    """A newer ``model_*`` in tier 2 that is a symlink out of the roots: the disk scan
    refuses it as ``outside_roots``, logged, counted and an event, once (not on every
    scan), and the served model stays (a review found it skipped silently)."""
    write_checkpoint(model_root, 1)
    holder = ModelHolder(settings_for())
    decider = Decider(holder)
    first = decider.check_disk()
    assert first is not None and first.applied
    outside = write_checkpoint(tmp_path / "outside", 9).path
    link = model_root / "model_9.pt"
    link.symlink_to(outside)
    bump_mtime(outside, 5.0)
    for _ in range(3):
        assert decider.check_disk() is None
    refused = [e for e in holder.events.recent() if e.reason == "outside_roots"]
    assert len(refused) == 1 and refused[0].path == str(link)
    sample = holder.metrics.registry.get_sample_value(
        "fks_rejections_total", {"model": holder.metrics.model, "reason": "outside_roots"}
    )
    assert sample == 1.0
    assert (served := holder.current()) is not None and served.version == 1
