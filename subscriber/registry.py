"""Node registry: every few seconds a node writes what it serves to ``fks:<instance>:nodes``.

Each hash field is a node id; its value is JSON with the served version, generation, path,
loaded_at, mode and ``heartbeat_at`` (unix seconds). An entry whose heartbeat is older than
``STALE_AFTER_BEATS`` intervals belongs to a dead node (``fks status`` marks it so); a node
that stops cleanly removes its own entry.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from common.keys import RedisKeys
from common.redis_connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts

__all__ = ["STALE_AFTER_BEATS", "NodeRegistry", "default_node_id", "is_stale"]

log = logging.getLogger(__name__)

STALE_AFTER_BEATS = 3


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_stale(entry: dict[str, Any], now: float | None = None) -> bool:
    """True when a registry entry missed ``STALE_AFTER_BEATS`` heartbeats."""
    interval = float(entry.get("interval", 2.0))
    age = (now or time.time()) - float(entry.get("heartbeat_at", 0.0))
    return age > STALE_AFTER_BEATS * interval


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
            self._redis().hset(self.keys.nodes, self.node_id, json.dumps(self.entry()))
        except REDIS_ERRORS as exc:
            log.debug("heartbeat not written: %s", exc)
            return False
        self.beats += 1
        return True

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
            self._redis().hdel(self.keys.nodes, self.node_id)
        except REDIS_ERRORS:
            pass
        self._lazy.close()

    def _redis(self) -> RedisClient:
        return self._given or self._lazy.get()
