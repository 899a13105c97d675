"""The load lane: one checkpoint load at a time, each with a time budget, none a hostage.

A load reads a file that may sit on a hung NFS mount or be anything else that blocks, and a
Python thread cannot be killed. So each load runs on a fresh daemon thread while the caller
waits at most ``timeout``; a load that overruns is *abandoned*: the caller gets a
:class:`~common.errors.CheckpointLoadError` (reason ``timeout``), the lane is free for the
next load, and the late result, if it ever comes, is dropped. At most ``max_hung`` abandoned
loads may still be stuck; past that the lane refuses loads (reason ``loads_hung``) rather
than pile up threads, until one of them returns.

Nothing else waits on the lane: swaps, rollbacks and requests never do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from common.errors import CheckpointLoadError

__all__ = ["LoadLane"]

T = TypeVar("T")


class _Run(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.error = exc
        finally:
            self.done.set()


class LoadLane:
    """Runs ``fn`` on a worker thread, one at a time, for at most ``timeout`` seconds."""

    def __init__(self, timeout: float, *, max_hung: int = 2) -> None:
        self.timeout = timeout
        self.max_hung = max_hung
        self.abandoned = 0
        self._slot = threading.Lock()
        self._hung: list[threading.Thread] = []

    @property
    def hung(self) -> int:
        """Abandoned loads whose thread is still stuck."""
        self._hung = [t for t in self._hung if t.is_alive()]
        return len(self._hung)

    def run(self, fn: Callable[[], T], *, what: str, timeout: float | None = None) -> T:
        """``fn()``'s result or exception; CheckpointLoadError if the lane is busy for the
        whole budget (``busy``), too many loads hang (``loads_hung``) or ``fn`` overruns
        (``timeout``)."""
        budget = self.timeout if timeout is None else timeout
        if not self._slot.acquire(timeout=budget):
            raise CheckpointLoadError(
                f"{what}: another load held the lane for {budget:.1f} s", reason="busy"
            )
        try:
            if self.hung >= self.max_hung:
                raise CheckpointLoadError(
                    f"{what}: {self.hung} earlier loads are still stuck; refusing more until "
                    "one returns",
                    reason="loads_hung",
                )
            run = _Run(fn)
            thread = threading.Thread(target=run, name="fks-load", daemon=True)
            thread.start()
            if not run.done.wait(budget):
                self._hung.append(thread)
                self.abandoned += 1
                raise CheckpointLoadError(
                    f"{what}: not finished after {budget:.1f} s; abandoned (a hung read?)",
                    reason="timeout",
                )
        finally:
            self._slot.release()
        if run.error is not None:
            raise run.error
        return run.value  # type: ignore[return-value]
