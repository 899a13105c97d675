"""A wall clock for one fetch, kept by a watchdog that cuts what the fetch blocks on.

A read blocked on a socket does not look at the clock, and a per-read timeout restarts with
every byte: a store (or a slow proxy) that sends its 200 and then a byte every half second is
never given up on, whatever budget is checked between chunks. So each transport hands the
:class:`Deadline` a way to cut what it blocks on (shut its sockets down, disconnect its Redis
connections, cancel its coroutine on fsspec's event loop) for as long as it reads, and a
watchdog thread runs those at the deadline: the blocked read returns with an error at once.
The load lane cuts the deadline too when it abandons the load that runs the fetch, so
abandoned work stops instead of reading on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Self

from common.closing import Service

__all__ = ["Deadline"]

log = logging.getLogger(__name__)


class Deadline(Service):
    """``seconds`` of wall clock from :meth:`start` (or ``with``, which ends with
    :meth:`close`), then every cut registered with :meth:`guard` runs, on the watchdog's
    thread; :meth:`cut` runs them sooner."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = math.inf
        self.cancelled = False  # cut by a caller (not by the clock)
        self._cut = threading.Event()
        self._cuts: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None

    def start(self) -> Self:
        """Start the clock and its watchdog (once; later calls do nothing)."""
        with self._lock:
            if self._watchdog is None:
                self.at = time.monotonic() + self.seconds
                self._watchdog = threading.Timer(max(0.0, self.seconds), self._expire)
                self._watchdog.name = "fks-fetch-watchdog"
                self._watchdog.daemon = True
                self._watchdog.start()
        return self

    def close(self) -> None:
        """The work is over: the watchdog has nothing left to cut."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    @property
    def expired(self) -> bool:
        """The time is up, or the work was cut."""
        return self._cut.is_set() or time.monotonic() >= self.at

    def left(self) -> float:
        """Seconds left (0 once expired)."""
        return 0.0 if self._cut.is_set() else max(0.0, self.at - time.monotonic())

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, less if the work is cut meanwhile."""
        self._cut.wait(seconds)

    @contextlib.contextmanager
    def guard(self, cut: Callable[[], None]) -> Iterator[None]:
        """Within the block, ``cut()`` runs when the deadline passes or :meth:`cut` is called
        (at once if that has already happened). It must be quick and safe to call from
        another thread while the block reads; its exceptions are logged and dropped."""
        key = next(self._keys)
        with self._lock:
            self._cuts[key] = cut
            already = self._cut.is_set()
        if already:
            _run(cut)
        try:
            yield
        finally:
            with self._lock:
                self._cuts.pop(key, None)

    def cut(self) -> None:
        """Cut the work now (:attr:`cancelled`): every guarded read returns (an error), and
        none starts."""
        self.cancelled = True
        self._expire()

    def _expire(self) -> None:
        with self._lock:
            self._cut.set()
            cuts = list(self._cuts.values())
        for cut in cuts:
            _run(cut)


def _run(cut: Callable[[], None]) -> None:
    try:
        cut()
    except Exception:  # noqa: BLE001 - a cut that fails must not stop the others
        log.debug("cutting a fetch failed", exc_info=True)
