"""Node registry: every few seconds a node writes what it serves to ``fks:<instance>:nodes``.

Each hash field is a node id; its value is JSON with the served version, generation, path,
sha256, loaded_at, mode, the requests and errors since the last swap, and ``heartbeat_at``
(unix seconds). Besides the heartbeat, :meth:`NodeRegistry.beat` is called after every judged
notification (``subscriber/acker.py``), so the entry is current when the ack arrives. An
entry whose heartbeat is older than ``STALE_AFTER_BEATS`` intervals belongs to a dead node
(``fks status`` marks it so, ``common/fleet.py``); a node that stops cleanly removes its own
entry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline

from common.fleet import STALE_AFTER_BEATS, is_stale
from common.keys import RedisKeys
from common.redis_connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts

__all__ = ["STALE_AFTER_BEATS", "NodeRegistry", "default_node_id", "is_stale"]

log = logging.getLogger(__name__)


def default_node_id() -> str:
    """``<hostname>:<pid>``, the hostname cut to the characters a node id may hold."""
    host = re.sub(r"[^A-Za-z0-9_.@-]", "_", socket.gethostname())[:100] or "host"
    return f"{host}:{os.getpid()}"


class NodeRegistry:
    def __init__(
        self,
        redis_url: str,
        keys: RedisKeys,
        describe: Callable[[], dict[str, Any]],
        *,
        node_id: str | None = None,
        interval: float = 2.0,
        client: RedisClient | None = None,
    ) -> None:
        self.keys = keys
        self.node_id = node_id or default_node_id()
        self.interval = interval
        self.describe = describe
        self.beats = 0
        self._given = client
        self._lazy = LazyRedis(redis_url, Timeouts(1.0, 1.0))
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one HSET at a time: entries land in order
        self._closed = False
        self._thread: threading.Thread | None = None

    def entry(self) -> dict[str, Any]:
        return {
            **self.describe(),
            "node_id": self.node_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "interval": self.interval,
            "heartbeat_at": time.time(),
        }

    def beat(self) -> bool:
        """Write this node's entry once; False (and a debug log) if Redis is unreachable."""
        try:
            return self.write()
        except REDIS_ERRORS as exc:
            log.debug("heartbeat not written: %s", exc)
            return False

    def write(self, then: Callable[[Pipeline], object] | None = None) -> bool:
        """Write this node's entry and, in the same pipeline after it, what ``then`` queues
        (the acker's PUBLISHes: one round trip, and the entry is current when an ack arrives).
        Once stopped, the entry stays removed (False) and only ``then``'s commands are sent.
        Raises what redis-py raises."""
        with self._lock:
            pipe = self._redis().pipeline(transaction=False)
            written = not self._closed
            if written:
                pipe.hset(self.keys.nodes, self.node_id, json.dumps(self.entry()))
            if then is not None:
                then(pipe)
            if len(pipe):
                pipe.execute()
            if written:
                self.beats += 1
            return written

    def start(self) -> NodeRegistry:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="fks-registry", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            with self._lock:
                self._closed = True
                self._redis().hdel(self.keys.nodes, self.node_id)
        except REDIS_ERRORS:
            pass
        self._lazy.close()

    def _redis(self) -> RedisClient:
        return self._given or self._lazy.get()
