"""The load lane: one load at a time, a time budget each, a hung load abandoned, never a
pile of threads."""

from __future__ import annotations

import threading

import pytest

from common.errors import CheckpointLoadError
from subscriber.lane import LoadLane
from tests.helpers import wait_for


def test_loads_run_one_after_another_on_one_kept_thread() -> None:
    """Results and exceptions come back; the worker thread is reused between loads."""
    lane = LoadLane(5)
    seen = {lane.run(lambda: threading.get_ident(), what="a") for _ in range(20)}
    assert len(seen) == 1 and threading.get_ident() not in seen
    with pytest.raises(ZeroDivisionError):
        lane.run(lambda: 1 / 0, what="b")
    assert lane.run(lambda: 42, what="c") == 42
    lane.close()


def test_a_hung_load_is_abandoned_and_the_next_one_runs() -> None:
    """A load over its budget raises `timeout`; the lane takes the next load at once."""
    lane = LoadLane(0.2)
    release = threading.Event()
    with pytest.raises(CheckpointLoadError) as err:
        lane.run(release.wait, what="stuck")
    assert err.value.reason == "timeout" and lane.hung == 1
    assert lane.run(lambda: "next", what="next") == "next"
    release.set()


def test_too_many_hung_loads_are_refused_until_one_returns() -> None:
    """Past max_hung stuck loads the lane refuses (`loads_hung`) instead of adding threads."""
    lane = LoadLane(0.1, max_hung=2)
    release = threading.Event()
    for _ in range(2):
        with pytest.raises(CheckpointLoadError):
            lane.run(release.wait, what="stuck")
    with pytest.raises(CheckpointLoadError) as err:
        lane.run(lambda: None, what="refused")
    assert err.value.reason == "loads_hung"
    release.set()
    wait_for(lambda: lane.hung == 0, timeout=2)
    assert lane.run(lambda: "ok", what="after") == "ok"
