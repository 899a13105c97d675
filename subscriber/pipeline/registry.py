"""Node registry: every few seconds a node writes what it serves to ``fks:<instance>:nodes``.

Each hash field is a node id; its value is JSON with the served version, generation, path,
sha256, loaded_at, mode, the requests and errors since the last swap, the node's last acks
(``acks``: what a publisher whose wait was cut reads back), its ``interval`` until the next
write and ``heartbeat_at``: Redis' time when written, as this node estimates it
(``common/redis_io/clock.py``; each write also reads Redis' ``TIME`` to keep the estimate fresh), so
no reader compares its clock with this node's. With ``FKS_NOTIFY_SECRET`` the entry is signed
(``common/fleet.py``): readers holding the secret believe nothing else.

Besides the heartbeat, :meth:`NodeRegistry.write` is called after every judged notification
(``acker.py``), so the entry is current when the ack arrives. While the node is a
canary (:meth:`NodeRegistry.watch`: it judged a message targeted at it) the entry is written
every ``CANARY_BEAT_SECONDS`` instead, so a rollout's soak judges fresh counters and sees a
dead canary within a second. An entry whose heartbeat is older than ``STALE_AFTER_BEATS``
intervals belongs to a dead node (``fks status`` marks it so); a node that stops cleanly
removes its own entry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Self

from redis.client import Pipeline

from common.ack import Ack
from common.fleet import (
    CANARY_BEAT_SECONDS,
    CANARY_WATCH_SECONDS,
    STALE_AFTER_BEATS,
    is_stale,
    sign_entry,
)
from common.keys import EPOCH_BYTES, RedisKeys
from common.redis_io.clock import RedisClock, queue_time, redis_seconds, sample
from common.redis_io.connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts
from subscriber.runtime.background import BackgroundLoop

__all__ = ["RECENT_ACKS", "STALE_AFTER_BEATS", "NodeRegistry", "default_node_id", "is_stale"]

log = logging.getLogger(__name__)

RECENT_ACKS = 8  # the acks an entry carries, newest last


def default_node_id() -> str:
    """``<hostname>:<pid>``, the hostname cut to the characters a node id may hold."""
    host = re.sub(r"[^A-Za-z0-9_.@-]", "_", socket.gethostname())[:100] or "host"
    return f"{host}:{os.getpid()}"


class NodeRegistry(BackgroundLoop):
    thread_name = "fks-registry"

    def __init__(
        self,
        redis_url: str,
        keys: RedisKeys,
        describe: Callable[[], dict[str, Any]],
        *,
        node_id: str | None = None,
        interval: float = 2.0,
        client: RedisClient | None = None,
        secret: str | None = None,
        clock: RedisClock | None = None,
        canary_interval: float = CANARY_BEAT_SECONDS,
        on_look: Callable[[bytes, bytes, float], None] | None = None,
    ) -> None:
        super().__init__()
        # each heartbeat reads the instance's :epoch token and :version counter in its round
        # trip and hands them here (the listener's looked): Redis can lose its data under a
        # connected node (FLUSHALL, an eviction), and no reconnect says so
        self.on_look = on_look
        self.keys = keys
        self.node_id = node_id or default_node_id()
        self.interval = interval
        self.canary_interval = min(canary_interval, interval)
        self.describe = describe
        self.secret = secret
        self.clock = clock or RedisClock()
        self.beats = 0
        self._given = client
        self._lazy = LazyRedis(redis_url, Timeouts(1.0, 1.0))
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one write at a time: entries land in order
        self._closed = False
        self._watch_until = 0.0  # monotonic: a canary until then
        # each recent ack as a dict (the signed entry) and as its JSON (spliced in unsigned)
        self._acks: deque[tuple[dict[str, Any], str]] = deque(maxlen=RECENT_ACKS)
        self._pid = os.getpid()
        self._host = socket.gethostname()

    # -- what is written -------------------------------------------------------------------

    def cadence(self) -> float:
        """Seconds until the next write: short while a canary."""
        return self.canary_interval if time.monotonic() < self._watch_until else self.interval

    def entry(self) -> dict[str, Any]:
        entry = {**self._head(), "acks": [fields for fields, _ in self._acks]}
        return sign_entry(entry, self.secret) if self.secret else entry

    def entry_json(self) -> str:
        """:meth:`entry` as the JSON written to Redis. Unsigned, the recent acks are spliced in
        as the JSON they were kept as (written with every ack: not encoded again each time);
        signed, the whole entry is encoded (the signature covers its canonical form)."""
        if self.secret:
            return json.dumps(self.entry())
        head = json.dumps(self._head())
        return f'{head[:-1]}, "acks": [{", ".join(text for _, text in self._acks)}]}}'

    def _head(self) -> dict[str, Any]:
        return {
            **self.describe(),
            "node_id": self.node_id,
            "pid": self._pid,
            "host": self._host,
            "interval": self.cadence(),
            "heartbeat_at": round(self.clock.now(), 6),
            "clock": "redis" if self.clock.measured else "local",
        }

    def watch(self, seconds: float = CANARY_WATCH_SECONDS) -> None:
        """This node is a canary: write the entry every ``canary_interval`` for ``seconds``
        (or until :meth:`unwatch`)."""
        already = time.monotonic() < self._watch_until
        self._watch_until = time.monotonic() + seconds
        if not already:
            self._wake.set()

    def unwatch(self) -> None:
        """Back to the heartbeat's pace (written at once, so the entry says so)."""
        if self._watch_until:
            self._watch_until = 0.0
            self._wake.set()

    @property
    def watched(self) -> bool:
        return time.monotonic() < self._watch_until

    # -- writing ---------------------------------------------------------------------------

    def beat(self) -> bool:
        """Write this node's entry once; False (and a debug log) if Redis is unreachable."""
        try:
            return self.write(look=self.on_look is not None)
        except REDIS_ERRORS as exc:
            log.debug("heartbeat not written: %s", exc)
            return False

    def write(
        self,
        then: Callable[[Pipeline], object] | None = None,
        acks: Sequence[Ack] = (),
        *,
        look: bool = False,
    ) -> bool:
        """Write this node's entry (``acks`` added to its recent acks) and, in the same
        pipeline after it, what ``then`` queues (the acker's PUBLISHes: one round trip, and
        the entry is current when an ack arrives), with ``look`` a read of ``:epoch`` and
        ``:version`` (handed to ``on_look`` with when they were asked), then Redis' ``TIME``
        (this node's clock estimate). Once stopped, the entry stays removed (False) and only
        ``then``'s commands are sent. Raises what redis-py raises."""
        with self._lock:
            if not self.clock.measured:  # the first entry is stamped on Redis' clock too
                sample(self._redis(), self.keys.nodes, self.clock)
            for ack in acks:
                fields = ack.recent_dict()
                self._acks.append((fields, json.dumps(fields)))
            pipe = self._redis().pipeline(transaction=False)
            written = not self._closed
            if written:
                pipe.hset(self.keys.nodes, self.node_id, self.entry_json())
            if then is not None:
                then(pipe)
            look = look and written and self.on_look is not None
            if look:  # their first 64 bytes, as the restore and the catch-up read them
                pipe.getrange(self.keys.epoch, 0, EPOCH_BYTES - 1)
                pipe.getrange(self.keys.version, 0, EPOCH_BYTES - 1)
            queue_time(pipe, self.keys.nodes)
            asked_at = time.monotonic()
            sent = time.time()
            replies = pipe.execute()
            self.clock.observe(redis_seconds(replies[-1]), sent, time.time())
            if written:
                self.beats += 1
        if look and self.on_look is not None:  # outside the lock: it may wake the listener
            epoch, counter = replies[-3], replies[-2]
            try:
                self.on_look(_bytes(epoch), _bytes(counter), asked_at)
            except Exception:  # noqa: BLE001 - the heartbeat must never die
                log.exception("handing :epoch and :version on failed")
        return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.beat()
            self._wake.wait(self.cadence())

    def _interrupt(self) -> None:
        self._wake.set()

    def start(self) -> Self:
        """Heartbeat again (after :meth:`stop`, which removed this node's entry)."""
        with self._lock:
            self._closed = False
        return super().start()

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)
        try:
            with self._lock:
                self._closed = True
                self._redis().hdel(self.keys.nodes, self.node_id)
        except REDIS_ERRORS:
            pass
        self._lazy.close()

    def _redis(self) -> RedisClient:
        return self._given or self._lazy.get()


def _bytes(reply: object) -> bytes:
    return reply if isinstance(reply, bytes) else str(reply or "").encode()
