"""The node registry as readers see it: ``fks:{instance}:nodes``, node id → JSON entry.

Each serving node writes its entry every ``FKS_HEARTBEAT_SECONDS`` and after every judged
notification (``subscriber/registry.py``); an entry whose heartbeat is older than
``STALE_AFTER_BEATS`` intervals belongs to a dead or partitioned node. ``fks status``, the
publisher's ``wait_for="all"`` and ``fks rollout`` read it through :func:`read_nodes`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from common.keys import RedisKeys
from common.redis_connect import RedisClient

__all__ = ["STALE_AFTER_BEATS", "NodeEntry", "is_stale", "live_nodes", "read_nodes"]

STALE_AFTER_BEATS = 3


def is_stale(entry: dict[str, Any], now: float | None = None) -> bool:
    """True when a registry entry missed ``STALE_AFTER_BEATS`` heartbeats."""
    try:
        interval = float(entry.get("interval", 2.0))
        age = (now or time.time()) - float(entry.get("heartbeat_at", 0.0))
    except (TypeError, ValueError):
        return True
    return age > STALE_AFTER_BEATS * interval


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One registry entry: the node id, its JSON (``{"error": …}`` if unreadable), its
    heartbeat age in seconds and whether it is stale."""

    node_id: str
    entry: dict[str, Any]
    age: float
    stale: bool

    def get(self, key: str) -> Any:
        return self.entry.get(key)


def read_nodes(client: RedisClient, keys: RedisKeys, now: float | None = None) -> list[NodeEntry]:
    """Every entry of the registry, sorted by node id (Redis errors propagate)."""
    now = time.time() if now is None else now
    rows = []
    for node_id, value in sorted(client.hgetall(keys.nodes).items()):
        name = node_id.decode(errors="replace") if isinstance(node_id, bytes) else str(node_id)
        try:
            entry = json.loads(value)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            entry = {"error": "unreadable entry"}
        try:
            age = now - float(entry.get("heartbeat_at", 0.0))
        except (TypeError, ValueError):
            age = float("inf")
        rows.append(NodeEntry(name, entry, age, is_stale(entry, now)))
    return rows


def live_nodes(client: RedisClient, keys: RedisKeys, now: float | None = None) -> list[NodeEntry]:
    """The entries of nodes whose heartbeat is fresh."""
    return [row for row in read_nodes(client, keys, now) if not row.stale]
