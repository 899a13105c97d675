"""Polling a condition until a deadline: the one wait loop of the process helpers (Redis
topologies, the S3 stand-in, the server process).

``predicate`` is called every ``every`` seconds; the exceptions in ``retry_on`` count as "not
yet" (a server still starting refuses connections), any other one ends the wait at once (a
process that exited says so). After ``timeout`` seconds: :class:`TimeoutError` saying ``what``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import redis

__all__ = ["wait_until"]

NOT_YET: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    retry_on: tuple[type[BaseException], ...] = NOT_YET,
    every: float = 0.05,
) -> None:
    """Return once ``predicate()`` is true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*retry_on):
            if predicate():
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(every)
