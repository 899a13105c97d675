"""``fks status``: what an instance looks like from Redis.

The ``:latest`` notification, the ``:version`` counter, how many subscribers listen
(``PUBSUB NUMSUB``) and every serving node of the registry with its heartbeat age.
``fks status --watch`` redraws it in place with ``rich`` (requests and errors since each
node's last swap included). Ages are on Redis' clock (``common/fleet.py``); with
``FKS_NOTIFY_SECRET`` an entry not signed with it is shown ``FORGED?`` and never live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.cluster import RedisCluster

from common.errors import InvalidNotification
from common.fleet import NodeEntry, read_nodes
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS, RedisClient

__all__ = [
    "NodeRow",
    "StatusReport",
    "format_status",
    "gather_status",
    "status_table",
    "watch_status",
]

NodeRow = NodeEntry


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
                 "stale": row.stale, "distrust": row.distrust or None}
                for row in self.nodes
            ],
        }  # fmt: skip


def gather_status(
    client: RedisClient,
    instance_id: str,
    keys: RedisKeys | None = None,
    *,
    secret: str | None = None,
) -> StatusReport:
    """What ``client`` says of ``instance_id`` (``keys``: its layout, hash-tagged in a
    cluster); with ``secret``, registry entries not signed with it are marked (never live)."""
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
    report.nodes = read_nodes(client, keys, secret=secret)
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
    several = _several(report)
    for row in report.nodes:
        e = row.entry
        beat = f"{row.age:.1f}s ago" + (" STALE" if row.stale else "")
        if row.distrust:
            beat += f" FORGED? ({row.distrust})"
        lines.append(
            f"  {row.node_id:<28} {_opt(e.get('version')):>8} {_opt(e.get('generation')):>5} "
            f"{e.get('mode', '?'):<6} {beat:>10}  {e.get('path') or '-'}"
        )
        if several:  # SPEC §13: the node serves these instances
            lines.append(f"  {'':<28} instances: {', '.join(_instances(e)) or '-'}")
    return "\n".join(lines)


def _several(report: StatusReport) -> bool:
    """Whether some node serves several instances (then each node's are shown)."""
    return any(len(_instances(row.entry)) > 1 for row in report.nodes)


def _instances(entry: dict[str, Any]) -> list[str]:
    """The instances a node's entry says it serves (entries before SPEC §13 say none)."""
    named = entry.get("instances")
    return [str(i) for i in named] if isinstance(named, list) else []


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def status_table(report: StatusReport) -> Any:
    """The status as a ``rich`` renderable (``fks status --watch``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(f"instance {report.instance_id}  (channel {report.channel})", style="bold")
    if report.latest is not None:
        n = report.latest
        latest = Text(f"latest: version {n.version}  {n.model_path}  step {n.training_step}")
    elif report.latest_error:
        latest = Text(f"latest: unreadable ({report.latest_error})", style="red")
    else:
        latest = Text("latest: none published yet")
    facts = Text(f"counter: {report.version_counter}   subscribers: {report.subscribers} listening")
    table = Table(box=None, header_style="bold")
    for column, justify in (
        ("node", "left"), ("version", "right"), ("gen", "right"), ("mode", "left"),
        ("requests", "right"), ("errors", "right"), ("heartbeat", "right"), ("path", "left"),
    ):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    several = _several(report)
    if several:
        table.add_column("instances")
    for row in report.nodes:
        e = row.entry
        beat = Text(f"{row.age:.1f}s ago")
        if row.stale:
            beat.append(" STALE", style="bold red")
        if row.distrust:
            beat.append(f" FORGED? ({row.distrust})", style="bold red")
        mode = str(e.get("mode", "?"))
        table.add_row(
            row.node_id, _opt(e.get("version")), _opt(e.get("generation")),
            Text(mode, style="green" if mode == "redis" else "yellow"),
            _opt(e.get("requests")), _opt(e.get("errors")), beat, str(e.get("path") or "-"),
            *([", ".join(_instances(e))] if several else []),
        )  # fmt: skip
    if not report.nodes:
        return Group(head, latest, facts, Text("nodes: none registered"))
    return Group(head, latest, facts, table)


def watch_status(
    gather: Callable[[], StatusReport | list[StatusReport]],
    *,
    interval: float = 1.0,
    count: int | None = None,
) -> None:
    """Redraw the status in place every ``interval`` seconds (``count`` times, or until
    interrupted); a Redis error is shown in place of the table until Redis answers."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def render() -> Any:
        try:
            reports = gather()
            if isinstance(reports, StatusReport):
                return status_table(reports)
            return Group(*(status_table(report) for report in reports))
        except REDIS_ERRORS as exc:
            return Text(f"Redis unavailable: {type(exc).__name__}: {exc}", style="red")

    drawn = 0
    with Live(render(), auto_refresh=False) as live:
        while True:
            drawn += 1
            if count is not None and drawn >= count:
                break
            time.sleep(interval)
            live.update(render(), refresh=True)


def _subscribers(client: RedisClient, channel: str) -> int:
    """``PUBSUB NUMSUB`` (in a cluster: summed over the nodes, each counts its own clients)."""
    if isinstance(client, RedisCluster):
        total = 0
        for node in client.get_nodes():  # type: ignore[no-untyped-call]
            replies = client.pubsub_numsub(channel, target_nodes=node)
            total += sum(int(count) for _, count in replies)
        return total
    return int(client.pubsub_numsub(channel)[0][1])
