"""``fks status``: what an instance looks like from Redis.

The ``:latest`` notification, the ``:version`` counter, how many subscribers listen
(``PUBSUB NUMSUB``) and every serving node of the registry with its heartbeat age.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.cluster import RedisCluster

from common.errors import InvalidNotification
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_connect import RedisClient
from subscriber.registry import is_stale

__all__ = ["NodeRow", "StatusReport", "format_status", "gather_status"]


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    entry: dict[str, Any]
    age: float
    stale: bool


@dataclass
class StatusReport:
    instance_id: str
    channel: str
    latest: CheckpointNotification | None = None
    latest_error: str | None = None
    version_counter: int = 0
    subscribers: int = 0
    nodes: list[NodeRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "channel": self.channel,
            "latest": self.latest.wire_dict() if self.latest else None,
            "latest_error": self.latest_error,
            "version_counter": self.version_counter,
            "subscribers": self.subscribers,
            "nodes": [
                {**row.entry, "node_id": row.node_id, "age_s": round(row.age, 3),
                 "stale": row.stale}
                for row in self.nodes
            ],
        }  # fmt: skip


def gather_status(
    client: RedisClient, instance_id: str, keys: RedisKeys | None = None
) -> StatusReport:
    """What ``client`` says of ``instance_id`` (``keys``: its layout, hash-tagged in a cluster)."""
    keys = keys or RedisKeys(instance_id, hash_tag=isinstance(client, RedisCluster))
    report = StatusReport(instance_id, keys.channel)
    raw = client.get(keys.latest)
    if raw is not None:
        try:
            report.latest = CheckpointNotification.from_message(raw)
        except InvalidNotification as exc:
            report.latest_error = str(exc)
    report.version_counter = int(client.get(keys.version) or 0)
    report.subscribers = _subscribers(client, keys.channel)
    now = time.time()
    for node_id, value in sorted(client.hgetall(keys.nodes).items()):
        name = node_id.decode() if isinstance(node_id, bytes) else str(node_id)
        try:
            entry = json.loads(value)
        except ValueError:
            entry = {"error": "unreadable entry"}
        age = now - float(entry.get("heartbeat_at", 0.0))
        report.nodes.append(NodeRow(name, entry, age, is_stale(entry, now)))
    return report


def format_status(report: StatusReport) -> str:
    lines = [f"instance {report.instance_id}  (channel {report.channel})"]
    if report.latest is not None:
        n = report.latest
        lines.append(
            f"latest:      version {n.version}  {n.model_path}  step {n.training_step}  "
            f"saved {n.saved_at.isoformat().replace('+00:00', 'Z')}"
        )
        if n.metadata:
            meta = ", ".join(f"{k}={v}" for k, v in sorted(n.metadata.items()))
            lines.append(f"             {meta}")
    elif report.latest_error:
        lines.append(f"latest:      unreadable ({report.latest_error})")
    else:
        lines.append("latest:      none published yet")
    lines.append(f"counter:     {report.version_counter}")
    lines.append(f"subscribers: {report.subscribers} listening now (PUBSUB NUMSUB)")
    if not report.nodes:
        lines.append("nodes:       none registered")
        return "\n".join(lines)
    lines.append("nodes:")
    header = f"  {'node':<28} {'version':>8} {'gen':>5} {'mode':<6} {'heartbeat':>10}  path"
    lines.append(header)
    for row in report.nodes:
        e = row.entry
        beat = f"{row.age:.1f}s ago" + (" STALE" if row.stale else "")
        lines.append(
            f"  {row.node_id:<28} {_opt(e.get('version')):>8} {_opt(e.get('generation')):>5} "
            f"{e.get('mode', '?'):<6} {beat:>10}  {e.get('path') or '-'}"
        )
    return "\n".join(lines)


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _subscribers(client: RedisClient, channel: str) -> int:
    """``PUBSUB NUMSUB`` (in a cluster: summed over the nodes, each counts its own clients)."""
    if isinstance(client, RedisCluster):
        total = 0
        for node in client.get_nodes():  # type: ignore[no-untyped-call]
            replies = client.pubsub_numsub(channel, target_nodes=node)
            total += sum(int(count) for _, count in replies)
        return total
    return int(client.pubsub_numsub(channel)[0][1])
