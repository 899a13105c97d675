"""After Redis returns, the listener is back within a second, however long Redis was away:
the reconnect backoff stops growing at 0.5 s (issue 15)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from fks.redis_server import EmbeddedRedis, free_port
from subscriber import ServingNode
from subscriber.pipeline.listener import ListenerTiming
from tests.helpers import wait_for


class RecordingEvent(threading.Event):
    """A stop event that remembers every timeout the listener slept for."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.sleeps.append(timeout)
        return super().wait(timeout)


def test_the_backoff_never_sleeps_past_half_a_second(
    start_node: Callable[..., ServingNode], model_root: Path
) -> None:
    """With the default timing, 3 s without Redis: every sleep ≤ 0.5 s, none at the cap
    sleeps through a Redis that came back; then the listener subscribes."""
    timing = ListenerTiming()
    assert timing.backoff_max == 0.5
    port = free_port()
    node = start_node(f"redis://127.0.0.1:{port}/0", timing=timing)
    recorder = RecordingEvent()
    node.listener._stop = recorder
    wait_for(lambda: len(recorder.sleeps) >= 8, timeout=10)
    assert max(recorder.sleeps) <= timing.backoff_max
    assert max(recorder.sleeps) >= timing.backoff_max / 2  # it did back off
    with EmbeddedRedis(port=port, persistent=False):
        wait_for(lambda: node.listener.connected, timeout=5)
