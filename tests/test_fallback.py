"""The mtime fallback: one os.stat per request, the next request sees a newer file."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common import Settings
from subscriber import ModelHolder
from subscriber.fallback import HOT_SECONDS, FallbackWatcher
from tests.helpers import write_checkpoint


@pytest.fixture
def watcher(settings_for: Callable[..., Settings]) -> FallbackWatcher:
    return FallbackWatcher(ModelHolder(settings_for()))


def test_no_model_until_a_checkpoint_appears_then_it_is_served(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """With nothing on disk every request finds nothing; the first file is picked up."""
    assert watcher.check() is None
    assert watcher.check() is None
    write_checkpoint(model_root, 1)
    model = watcher.check()
    assert model is not None and model.version == 1 and model.source == "disk"


def test_the_next_request_sees_a_newer_file(watcher: FallbackWatcher, model_root: Path) -> None:
    """A newer model_*.pt in the directory is served by the very next request."""
    write_checkpoint(model_root, 1)
    assert watcher.check().version == 1  # type: ignore[union-attr]
    time.sleep(HOT_SECONDS)
    write_checkpoint(model_root, 2)
    model = watcher.check()
    assert model is not None and model.version == 2 and model.source == "mtime"


def test_an_explicit_model_file_rewritten_in_place_is_reloaded(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """Tier 1 (STAT_PAIR_RL_MODEL) is watched as a file."""
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    path = write_checkpoint(explicit, 1, name="policy.pt").path
    watcher = FallbackWatcher(ModelHolder(settings_for(model_path=path)))
    assert watcher.check().version == 1  # type: ignore[union-attr]
    write_checkpoint(explicit, 2, name="policy.pt")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert watcher.check().version == 2  # type: ignore[union-attr]


def test_steady_state_costs_one_stat_per_request(
    watcher: FallbackWatcher, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the directory has aged, each request makes exactly one os.stat call."""
    write_checkpoint(model_root, 1)
    watcher.check()
    past = time.time_ns() - 10**9
    os.utime(model_root, ns=(past, past))
    watcher.check()
    calls: list[object] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        calls.append(path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("subscriber.fallback.os.stat", counting_stat)
    for _ in range(100):
        assert watcher.check() is not None
    assert len(calls) == 100 and set(calls) == {model_root}


def test_an_older_file_appearing_does_not_replace_the_served_one(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """Only a newer file is loaded: an old file copied in later does not win by name."""
    write_checkpoint(model_root, 5)
    assert watcher.check().version == 5  # type: ignore[union-attr]
    old = write_checkpoint(model_root, 1)
    stamp = (model_root / "model_5.pt").stat().st_mtime_ns - 10**9
    os.utime(old.path, ns=(stamp, stamp))
    assert watcher.check().version == 5  # type: ignore[union-attr]


def test_a_bad_newer_file_keeps_the_served_model(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """A truncated newer file is refused once and the old model keeps serving."""
    write_checkpoint(model_root, 1)
    served = watcher.check()
    time.sleep(HOT_SECONDS)
    (model_root / "model_2.pt").write_bytes(b"PK\x03\x04 half a zip")
    assert watcher.check() is served
    assert watcher.check() is served
    reasons = [e.reason for e in watcher.holder.events.recent()]
    assert reasons.count("truncated") == 1


def test_a_cold_start_skips_a_bad_newest_file_for_an_older_good_one(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """With no model served, the newest checkpoint that loads is served; the bad one is
    refused once and not loaded again on the next request."""
    write_checkpoint(model_root, 1)
    bad = model_root / "model_2.pt"
    bad.write_bytes(b"PK\x03\x04 cut short")
    os.utime(bad, ns=((model_root / "model_1.pt").stat().st_mtime_ns + 10**9,) * 2)
    model = watcher.check()
    assert model is not None and model.version == 1
    assert watcher.check() is model
    assert [e.reason for e in watcher.holder.events.recent()].count("truncated") == 1
