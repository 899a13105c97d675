"""One loop on a daemon thread of its own: the applier's, the listener's, the heartbeat's.

A subclass names its thread (``thread_name``), runs its loop in :meth:`BackgroundLoop._run`
until ``self._stop`` is set, and wakes that loop from whatever else it waits on in
:meth:`BackgroundLoop._interrupt`. ``start()`` is idempotent; ``stop(timeout)`` returns
within ``timeout``; a stopped loop may be started again.
"""

from __future__ import annotations

import threading
from typing import ClassVar, Self

__all__ = ["BackgroundLoop"]


class BackgroundLoop:
    thread_name: ClassVar[str]

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the loop from a wait other than on ``self._stop`` (nothing to do here)."""
