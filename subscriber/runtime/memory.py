"""Give freed model memory back to the OS after swaps (glibc ``malloc_trim``), once a second.

glibc keeps the freed arenas of replaced models, so RSS would sit a few models above
served + previous. ``malloc_trim(0)`` returns that memory; elsewhere (musl, macOS) it is a
no-op. A trim is not free: it costs ~0.15 ms, and the next load page-faults the returned
memory back in (together ~1 ms of a ~4 ms load, bench/), so it runs on a timer thread
:data:`TRIM_DELAY_S` after a swap, once for all the swaps of that second, never on the
path of a swap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

__all__ = ["TRIM_DELAY_S", "DeferredTrim", "release_free_memory"]

log = logging.getLogger(__name__)

TRIM_DELAY_S = 1.0


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return freed heap memory to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class DeferredTrim:
    """Schedules one :func:`release_free_memory` ``delay`` seconds after a swap.

    Swaps while one is scheduled share it, so a storm of swaps costs one trim a second.
    """

    def __init__(
        self, delay: float = TRIM_DELAY_S, trim: Callable[[], bool] = release_free_memory
    ) -> None:
        self.delay = delay
        self._trim = trim
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def pending(self) -> bool:
        with self._lock:
            return self._timer is not None

    def after_swap(self) -> None:
        """A model was replaced: trim within ``delay`` (unless a trim is already due)."""
        with self._lock:
            if self._timer is not None:
                return
            timer = threading.Timer(self.delay, self._run)
            timer.name = "fks-trim"
            timer.daemon = True
            self._timer = timer
        timer.start()

    def cancel(self) -> None:
        """Drop a scheduled trim (on shutdown)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self._trim()
        except Exception:  # noqa: BLE001 - a failed trim must not kill the timer thread loudly
            log.exception("releasing freed memory failed")
