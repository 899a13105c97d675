"""The mtime fallback: one os.stat per request; after a change the next request waits (bounded)
for the applier's look at the disk, so a newer file answers it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common import Settings
from subscriber import ModelHolder
from subscriber.model.loader import prepare_confined
from subscriber.model.snapshot import ServedModel
from subscriber.pipeline.applier import Applier
from subscriber.pipeline.decider import Decider
from subscriber.pipeline.fallback import HOT_SECONDS, FallbackWatcher
from tests.helpers import wait_for, write_checkpoint


@pytest.fixture
def make_watcher(
    settings_for: Callable[..., Settings],
) -> Iterator[Callable[..., FallbackWatcher]]:
    appliers: list[Applier] = []

    def make(**overrides: object) -> FallbackWatcher:
        settings = settings_for(**overrides)
        decider = Decider(ModelHolder(settings))
        applier = Applier(decider, poll=settings.fallback_poll_seconds).start()
        appliers.append(applier)
        return FallbackWatcher(decider.holder, applier)

    yield make
    for applier in appliers:
        applier.stop()


@pytest.fixture
def watcher(make_watcher: Callable[..., FallbackWatcher]) -> FallbackWatcher:
    return make_watcher(fallback_poll_seconds=60.0)  # requests alone drive the checks here


def served_version(watcher: FallbackWatcher, version: int) -> Callable[[], bool]:
    def check() -> bool:
        model = watcher.check()
        return model is not None and model.version == version

    return check


def test_no_model_until_a_checkpoint_appears_then_it_is_served(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """With nothing on disk a request finds nothing (at once); the first file is picked up."""
    start = time.monotonic()
    assert watcher.check() is None
    assert watcher.check() is None
    assert time.monotonic() - start < 1.0  # a cold request waits for one look, not longer
    write_checkpoint(model_root, 1)
    model = watcher.check()
    assert model is not None and model.version == 1 and model.source == "disk"


def test_the_next_request_after_a_newer_file_is_answered_by_it(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """A newer model_*.pt: the very next request waits for the applier's look and is answered
    by it, also for a second file written within the same mtime tick window."""
    write_checkpoint(model_root, 1)
    first = watcher.check()
    assert first is not None and first.version == 1
    for version in (2, 3):  # 3 arrives while the directory's signature is still hot
        write_checkpoint(model_root, version)
        model = watcher.check()
        assert model is not None and model.version == version and model.source == "mtime"


def test_a_slow_load_holds_the_request_at_most_the_bound_and_only_once(
    make_watcher: Callable[..., FallbackWatcher],
    model_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newer file whose load outlasts FRESH_WAIT_SECONDS: the request that saw the change
    is answered by the served model once the bound is over, the next one does not wait
    again, and the newer file is served when its load ends."""
    monkeypatch.setattr("subscriber.pipeline.fallback.FRESH_WAIT_SECONDS", 0.2)
    watcher = make_watcher(fallback_poll_seconds=60.0)
    write_checkpoint(model_root, 1)
    first = watcher.check()
    assert first is not None
    release = threading.Event()
    real_prepare = prepare_confined

    def slow_prepare(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == "model_2.pt":
            release.wait(10)
        return real_prepare(path, *args, **kwargs)

    monkeypatch.setattr("subscriber.model.holder.prepare_confined", slow_prepare)
    write_checkpoint(model_root, 2)
    past = time.time_ns() - 10**9
    os.utime(model_root, ns=(past, past))  # an aged signature: confirmed after one look
    try:
        assert watcher.check() is first  # the load is still held: the bound ended the wait
        waits: list[float] = []
        real_wait = watcher.applier.wait_disk_check

        def counting_wait(ticket: int, timeout: float) -> bool:
            waits.append(timeout)
            return real_wait(ticket, timeout)

        monkeypatch.setattr(watcher.applier, "wait_disk_check", counting_wait)
        assert watcher.check() is first
        assert waits == []  # the change was looked at: no second request waits for it
    finally:
        release.set()
    wait_for(served_version(watcher, 2))


def test_an_explicit_model_file_rewritten_in_place_is_reloaded(
    make_watcher: Callable[..., FallbackWatcher], tmp_path: Path
) -> None:
    """Tier 1 (STAT_PAIR_RL_MODEL) is watched as a file."""
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    path = write_checkpoint(explicit, 1, name="policy.pt").path
    watcher = make_watcher(model_path=path, fallback_poll_seconds=60.0)
    assert watcher.check().version == 1  # type: ignore[union-attr]
    write_checkpoint(explicit, 2, name="policy.pt")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    wait_for(served_version(watcher, 2))


def test_steady_state_costs_one_stat_per_request(
    watcher: FallbackWatcher, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the directory has aged, each request makes exactly one os.stat call."""
    write_checkpoint(model_root, 1)
    watcher.check()
    past = time.time_ns() - 10**9
    os.utime(model_root, ns=(past, past))
    watcher.check()
    watcher.applier.wait_idle(5)
    calls: list[object] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        calls.append(path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("subscriber.pipeline.fallback.os.stat", counting_stat)
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
    watcher.check()
    watcher.applier.wait_idle(5)
    assert watcher.check().version == 5  # type: ignore[union-attr]


def test_a_bad_newer_file_keeps_the_served_model(
    watcher: FallbackWatcher, model_root: Path
) -> None:
    """A truncated newer file is refused once and the old model keeps serving."""
    write_checkpoint(model_root, 1)
    served = watcher.check()
    time.sleep(HOT_SECONDS)
    (model_root / "model_2.pt").write_bytes(b"PK\x03\x04 half a zip")
    for _ in range(5):
        assert watcher.check() is served
        watcher.applier.wait_idle(5)
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
    watcher.applier.wait_idle(5)
    assert [e.reason for e in watcher.holder.events.recent()].count("truncated") == 1


def test_a_file_written_in_place_is_served_once_complete(
    make_watcher: Callable[..., FallbackWatcher], model_root: Path, tmp_path: Path
) -> None:
    """A checkpoint copied in place (cp, a plain torch.save) and seen half-written is refused
    as truncated, then served once complete: the poll notices the file changed, although the
    directory's own signature did not."""
    watcher = make_watcher(fallback_poll_seconds=0.1)
    write_checkpoint(model_root, 1)
    assert watcher.check().version == 1  # type: ignore[union-attr]
    data = write_checkpoint(tmp_path, 2).path.read_bytes()
    target = model_root / "model_2.pt"
    with open(target, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        wait_for(lambda: any(e.reason == "truncated" for e in watcher.holder.events.recent()), 5)
        fh.write(data[len(data) // 2 :])
    wait_for(served_version(watcher, 2))


def test_a_checkpoint_in_a_tier_that_was_empty_is_picked_up(
    make_watcher: Callable[..., FallbackWatcher], tmp_path: Path
) -> None:
    """Serving tier 3 while STAT_PAIR_RL_DIR is empty, a checkpoint saved into the tier-2
    directory is served (tier 2 outranks tier 3), as a freshly started node would."""
    tier2, tier3 = tmp_path / "tier2", tmp_path / "tier3"
    tier2.mkdir()
    tier3.mkdir()
    write_checkpoint(tier3, 1)
    watcher = make_watcher(model_dir=tier2, default_model_dir=tier3, fallback_poll_seconds=0.1)
    first: ServedModel | None = watcher.check()
    assert first is not None and first.version == 1
    time.sleep(HOT_SECONDS)
    write_checkpoint(tier2, 2)
    wait_for(served_version(watcher, 2))
