"""One clock for the fleet: the Redis server's (``TIME``), as each process estimates it.

Nodes, publishers and operators run on machines whose clocks disagree. Anything the fleet
layer compares across machines (a heartbeat's age, a forced message's ``issued_at``) is
therefore stamped and judged on the clock of the Redis that carries it: every process keeps
an offset from its own wall clock to Redis' ``TIME``, measured on a round trip it makes
anyway (a heartbeat, an allocation, a registry read), and refreshed at each one. A node whose
clock is 30 s behind stamps its heartbeat at Redis' time all the same, and a reader with a
skewed clock judges the age against Redis' time too (``common/fleet.py``).

:data:`TIME_SCRIPT` returns ``TIME`` from the node that holds its one key, so in a Redis
Cluster it answers from the slot being written or read, in the same pipeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.cluster import ClusterPipeline

__all__ = ["TIME_SCRIPT", "RedisClock", "queue_time", "redis_seconds", "sample"]

# KEYS[1]: any key of the instance (it routes the call in a cluster); returns {sec, usec}
TIME_SCRIPT = "return redis.call('TIME')"


def queue_time(pipe: Any, key: str) -> None:
    """Queue Redis' ``TIME`` on ``pipe``: the plain command, or in a cluster the script on
    ``key``'s node (a cluster pipeline would send a keyless ``TIME`` to every node)."""
    if isinstance(pipe, ClusterPipeline):
        pipe.execute_command("EVAL", TIME_SCRIPT, 1, key)  # type: ignore[no-untyped-call]
    else:
        pipe.time()


def redis_seconds(reply: Sequence[object]) -> float:
    """Unix seconds from a ``TIME`` reply (``[seconds, microseconds]``, bytes or ints); a
    reply that is not one is a :class:`redis.ResponseError`, as any bad answer of Redis."""
    try:
        sec, usec = (_integer(part) for part in reply[:2])
    except (TypeError, ValueError) as exc:
        raise redis.ResponseError(f"not a TIME reply: {reply!r:.80}") from exc
    return float(sec) + usec / 1e6


def _integer(part: object) -> int:
    """One number of a ``TIME`` reply: an int, or its digits as bytes or text (a script's
    reply in a cluster comes as bytes)."""
    if isinstance(part, bool):
        raise ValueError(f"not a TIME reply part: {part!r}")
    if isinstance(part, int):
        return part
    if isinstance(part, bytes | str):
        return int(part)
    raise ValueError(f"not a TIME reply part: {part!r}")


class RedisClock:
    """This process' estimate of Redis' clock: its own wall clock plus a measured offset
    (0 until the first measurement: then it is just the local clock)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._measured = False
        self._lock = threading.Lock()

    @property
    def measured(self) -> bool:
        return self._measured

    @property
    def offset(self) -> float:
        """Redis' clock minus this machine's, in seconds."""
        return self._offset

    def observe(self, redis_time: float, sent: float, received: float) -> None:
        """Redis answered ``redis_time`` to a call sent at local ``sent`` and answered at
        local ``received`` (both ``time.time()``): the middle of the round trip is when."""
        with self._lock:
            self._offset = redis_time - (sent + received) / 2
            self._measured = True

    def now(self) -> float:
        """Redis' time now, in unix seconds (estimated)."""
        return time.time() + self._offset

    def now_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)


def sample(client: Any, key: str, clock: RedisClock) -> float:
    """Ask Redis' time (on ``key``'s node) once, teach ``clock`` and return it (Redis errors
    propagate)."""
    pipe = client.pipeline(transaction=False)
    queue_time(pipe, key)
    sent = time.time()
    (reply,) = pipe.execute()
    redis_now = redis_seconds(reply)
    clock.observe(redis_now, sent, time.time())
    return redis_now
