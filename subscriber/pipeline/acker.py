"""The acks of SPEC §11: after judging a notification, the node says so on
``fks:{instance}:acks`` and rewrites its registry entry at once.

:meth:`Acker.ack` never blocks and never raises: it queues the ack for the acker's own thread
(bounded: past ``max_pending`` the ack is dropped and counted), which sends, in one pipeline
(one round trip), the node's registry entry (``registry.py``: the entry is current
when the ack arrives) and then the queued acks' PUBLISHes. Redis down: the acks are dropped, counted
(``fks_acks_dropped_total``) and logged once per outage; the applier is never slowed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from redis.client import Pipeline
from redis.cluster import ClusterPipeline

from common.ack import Ack
from common.keys import RedisKeys
from common.redis_io.connect import REDIS_ERRORS, LazyRedis, Timeouts
from subscriber.runtime.metrics import Metrics

__all__ = ["Acker"]

log = logging.getLogger(__name__)


class EntryWriter(Protocol):
    """:meth:`~subscriber.pipeline.registry.NodeRegistry.write`: the entry (with these acks
    among its recent ones), then what ``then`` queues, in one round trip."""

    def __call__(
        self, then: Callable[[Pipeline], object] | None = None, acks: Sequence[Ack] = ()
    ) -> object: ...


class Acker:
    def __init__(
        self,
        redis_url: str,
        keys: RedisKeys,
        metrics: Metrics,
        *,
        registry: EntryWriter | None = None,
        max_pending: int = 1024,
        timeout: float = 0.5,
    ) -> None:
        self.keys = keys
        self.metrics = metrics
        self.registry = registry  # NodeRegistry.write: the entry, then our PUBLISHes
        self.sent = 0
        self.dropped = 0
        # a SimpleQueue: its put and its wakeup are C code, where a Queue runs a Python
        # Condition for each (this is the per-notification path, issue 26); bounded by hand
        self._queue: queue.SimpleQueue[Ack | None] = queue.SimpleQueue()
        self.max_pending = max_pending
        self._lazy = LazyRedis(redis_url, Timeouts(timeout, timeout))
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> Acker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fks-acker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Send what is queued (within ``timeout``), then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self._lazy.close()

    def ack(self, ack: Ack) -> None:
        """Queue ``ack``; never blocks (a full queue drops it, counted)."""
        if self._queue.qsize() >= self.max_pending:
            self._drop(1, "the ack queue is full")
        else:
            self._queue.put(ack)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while True:  # whatever piled up goes out after one registry write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            acks = [a for a in batch if a is not None]
            if acks:
                self._send(acks)
            if None in batch:
                return

    def _send(self, acks: list[Ack]) -> None:
        after: list[Ack] = []  # a cluster's: sent once the pipeline (the entry) is written
        try:

            def publish(pipe: Pipeline) -> None:
                if isinstance(pipe, ClusterPipeline):
                    after.extend(acks)  # redis-py refuses PUBLISH in a cluster pipeline
                    return
                for a in acks:
                    pipe.publish(self.keys.acks, a.to_json())

            if self.registry is not None:
                self.registry(publish, acks)
            else:
                pipe = self._lazy.get().pipeline(transaction=False)
                publish(pipe)
                pipe.execute()
            for a in after:  # a cluster forwards a PUBLISH to every node
                self._lazy.get().publish(self.keys.acks, a.to_json())
        except REDIS_ERRORS as exc:
            self._drop(len(acks), f"{type(exc).__name__}: {exc}")
            return
        except Exception:  # noqa: BLE001 - the acker must never die
            log.exception("sending %d ack(s) failed unexpectedly", len(acks))
            self._drop(len(acks), "unexpected error")
            return
        if self._failing:
            log.info("acks reach Redis again")
            self._failing = False
        self.sent += len(acks)
        for a in acks:
            self.metrics.acks.labels(a.outcome).inc()

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self.metrics.acks_dropped.inc(count)
        if not self._failing:
            log.warning("dropped %d ack(s): %s (further drops are counted, not logged)", count, why)
            self._failing = True
