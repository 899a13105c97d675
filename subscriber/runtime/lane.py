"""The load lane: one checkpoint load at a time, each with a time budget, none a hostage.

A load reads a file that may sit on a hung NFS mount or be anything else that blocks, and a
Python thread cannot be killed. So loads run on a worker thread while the caller waits at
most ``timeout``; a load that overruns is *abandoned*: the caller gets a
:class:`~common.errors.CheckpointLoadError` (reason ``timeout``), the caller's ``on_abandon``
is called to stop the work (a fetch's :class:`~subscriber.fetching.deadline.Deadline` is cut: its
sockets shut, its download ends), the stuck worker is left to finish (its late result is
dropped, and it ends then) and a fresh worker takes the next load.

Abandoned work never takes capacity from later loads: a load is never refused because
earlier ones are stuck (it once was, past two, as ``loads_hung``: a store trickling bytes
then wedged every later load, a good local checkpoint included). What keeps threads from
piling up doing real work is that abandoned work is stopped, not that new work is refused:
a fetch is cut by its deadline (its own, or the lane's ``on_abandon``), and the load that
follows a fetch does not start once abandoned. What may stay: a thread blocked in the kernel
(a read on a dead mount), which does no work and which only a restart frees, and a local load
already decoding, which runs to its end (the loader has no point to stop at; a file that
timed out once is remembered and not loaded again). :attr:`LoadLane.hung` counts the threads
not ended yet, and each abandonment logs that count.

The worker is kept between loads: a thread per load cost ~100 µs to start and, worse, made
glibc spread the models' memory over new arenas that ``malloc_trim`` could not fully return
(RSS grew by ~1 model per hundreds of swaps; `tests/reliability/test_memory.py`).

Nothing else waits on the lane: swaps, rollbacks and requests never do.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from common.errors import CheckpointLoadError

__all__ = ["LoadLane"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Job(Generic[T]):
    """``fn`` to run once; :meth:`wait` returns True once it has. Its "done" is a bare lock,
    held from the start and released when ``fn`` returns: a ``threading.Event`` is a Python
    Condition built for every job, and its wait runs Python code on each wakeup (this is
    the per-notification path: a swap hands two jobs to the lane, issue 26)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self._done = threading.Lock()
        self._done.acquire()
        self.value: T | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.error = exc
        finally:
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once ``fn`` has returned (within ``timeout`` s); called by one waiter, once."""
        return self._done.acquire(timeout=max(0.0, timeout))


class _Worker:
    """A daemon thread running jobs from its queue until told to stop (``None``), after
    ``init`` (if given) has run on it."""

    def __init__(self, init: Callable[[], None] | None = None) -> None:
        self.jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._init = init
        self.thread = threading.Thread(target=self._run, name="fks-load", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self._init is not None:
            self._init()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job()
            # The result is the caller's now. Kept here, it would be freed when the next job
            # (or the stop) arrives: at exit, while the interpreter finalises, and freeing a
            # torch tensor there ends this thread inside C++ code (std::terminate, SIGABRT).
            del job


class LoadLane:
    """Runs ``fn`` on the worker thread, one at a time, for at most ``timeout`` seconds;
    ``thread_init`` runs first on every worker thread the lane starts (torch's thread limit:
    ``subscriber/runtime/threads.py``)."""

    def __init__(self, timeout: float, *, thread_init: Callable[[], None] | None = None) -> None:
        self.timeout = timeout
        self.thread_init = thread_init
        self.abandoned = 0
        self._slot = threading.Lock()
        self._worker: _Worker | None = None
        self._hung: list[threading.Thread] = []

    @property
    def hung(self) -> int:
        """Abandoned loads whose thread is still stuck."""
        self._hung = [t for t in self._hung if t.is_alive()]
        return len(self._hung)

    def run(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        timeout: float | None = None,
        on_abandon: Callable[[], None] | None = None,
    ) -> T:
        """``fn()``'s result or exception; CheckpointLoadError if the lane is busy for the
        whole budget (``busy``) or ``fn`` overruns (``timeout``: ``on_abandon()`` is called
        first, on this thread, to stop what ``fn`` still does)."""
        budget = self.timeout if timeout is None else timeout
        if not self._slot.acquire(timeout=budget):
            raise CheckpointLoadError(
                f"{what}: another load held the lane for {budget:.1f} s", reason="busy"
            )
        try:
            if self._worker is None:
                self._worker = _Worker(self.thread_init)
            job = _Job(fn)
            self._worker.jobs.put(job)
            if not job.wait(budget):
                stuck, self._worker = self._worker, None
                stuck.jobs.put(None)  # it stops once (if ever) the stuck job returns
                self._hung.append(stuck.thread)
                self.abandoned += 1
                if on_abandon is not None:
                    try:
                        on_abandon()
                    except Exception:  # noqa: BLE001 - the caller still gets its timeout
                        log.exception("stopping an abandoned load failed")
                log.warning(
                    "%s: abandoned after %.1f s; %d abandoned load thread(s) not ended yet",
                    what,
                    budget,
                    self.hung,
                )
                raise CheckpointLoadError(
                    f"{what}: not finished after {budget:.1f} s; abandoned (a hung read?)",
                    reason="timeout",
                )
        finally:
            self._slot.release()
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]

    def close(self, timeout: float = 5.0) -> None:
        """End the worker thread and wait up to ``timeout`` seconds for it (a stuck load is
        left to the daemon thread). A worker still running when the process exits would
        run into the interpreter's finalisation: a thread that touches a torch tensor then
        aborts the whole process (SIGABRT, "terminate called without an active
        exception"), which a supervisor reads as a crash."""
        with self._slot:
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.jobs.put(None)
        if worker is not None and worker.thread is not threading.current_thread():
            worker.thread.join(timeout)
