"""The node registry as readers see it: ``fks:{instance}:nodes``, node id → JSON entry.

Each serving node writes its entry every ``FKS_HEARTBEAT_SECONDS``, after every judged
notification, and every :data:`CANARY_BEAT_SECONDS` while it is a canary
(``subscriber/pipeline/registry.py``). Two rules make the entries evidence, not hearsay:

- **One clock.** ``heartbeat_at`` is Redis' time as the node estimates it
  (``common/redis_io/clock.py``), and readers judge its age against Redis' ``TIME`` read in the same
  pipeline as the entries. No two machines' clocks are ever compared: a healthy node whose
  clock is 30 s behind is live, a dead one whose clock ran ahead goes stale on time.
- **Signed.** With ``FKS_NOTIFY_SECRET`` a node signs its entry (HMAC-SHA256 of its
  canonical JSON, as messages are signed); a reader holding the secret believes only entries
  signed with it. An entry that is unsigned or badly signed is listed (``fks status`` shows
  it) but is never live: it cannot be picked as a canary, waited for, or believed about what
  a node serves or how its requests fare. Without a secret, whoever can write to Redis can
  write any entry: docs/how-it-works/security.md says so.

An entry whose heartbeat is older than ``STALE_AFTER_BEATS`` of its own intervals (at least
:data:`MIN_STALE_SECONDS`) belongs to a dead or partitioned node. ``fks status``, the
publisher's ``wait_for="all"`` and ``fks rollout`` read the registry through
:func:`read_nodes`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidNotification
from common.keys import RedisKeys
from common.redis_io.clock import RedisClock, queue_time, redis_seconds
from common.redis_io.connect import RedisClient
from common.signing import SIGNATURE_FIELD, sign_payload, verify_payload

__all__ = [
    "CANARY_BEAT_SECONDS",
    "CANARY_WATCH_SECONDS",
    "MIN_STALE_SECONDS",
    "STALE_AFTER_BEATS",
    "NodeEntry",
    "entry_trust",
    "is_stale",
    "live_nodes",
    "read_nodes",
    "sign_entry",
]

STALE_AFTER_BEATS = 3
# however short a node's interval, an entry is not stale before this (a busy node's
# registry thread may be a few hundred ms late)
MIN_STALE_SECONDS = 1.0
# A node that judged a message targeted at it (a canary, SPEC §11) rewrites its entry this
# often, for at most CANARY_WATCH_SECONDS or until it judges a message for every node: the
# soak of ``fks rollout`` judges counters and liveness no older than that.
CANARY_BEAT_SECONDS = 0.25
CANARY_WATCH_SECONDS = 3600.0


def is_stale(entry: dict[str, Any], now: float) -> bool:
    """True when a registry entry missed ``STALE_AFTER_BEATS`` heartbeats (``now``: Redis'
    time, in the clock the entry was stamped with), or claims a heartbeat as far in the
    future (Redis' clock stepped back, e.g. a failover to a host whose clock is behind: a
    live node re-stamps its entry on its next write, a dead one never does)."""
    try:
        interval = float(entry.get("interval", 2.0))
        age = now - float(entry.get("heartbeat_at", 0.0))
    except (TypeError, ValueError):
        return True
    bound = max(STALE_AFTER_BEATS * interval, MIN_STALE_SECONDS)
    return not -bound <= age <= bound


def sign_entry(entry: dict[str, Any], secret: str | bytes) -> dict[str, Any]:
    """``entry`` with the HMAC-SHA256 ``signature`` of its canonical JSON."""
    body = {k: v for k, v in entry.items() if k != SIGNATURE_FIELD}
    return {**body, SIGNATURE_FIELD: sign_payload(body, secret, "node-entry")}


def entry_trust(entry: dict[str, Any], node_id: str, secret: str | bytes | None) -> str:
    """Why an entry is not to be believed (``""``: it is): with a secret, it must be signed
    with it and name the node it is filed under (a signed entry copied to another id is not
    that node's)."""
    if secret is None:
        return ""
    try:
        verify_payload(entry, secret, "node-entry")
    except InvalidNotification as exc:
        return exc.reason  # unsigned | bad_signature
    if entry.get("node_id") != node_id:
        return "misfiled"
    return ""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One registry entry: the node id, its JSON (``{"error": …}`` if unreadable), its
    heartbeat age in seconds (on Redis' clock), whether it is stale, and why it is not to be
    believed (``distrust``: ``unsigned``, ``bad_signature``, ``misfiled``; empty when it is)."""

    node_id: str
    entry: dict[str, Any]
    age: float
    stale: bool
    distrust: str = ""

    @property
    def live(self) -> bool:
        """A fresh heartbeat of an entry that is believed."""
        return not self.stale and not self.distrust

    def get(self, key: str) -> Any:
        return self.entry.get(key) if not self.distrust else None


def read_nodes(
    client: RedisClient,
    keys: RedisKeys,
    now: float | None = None,
    *,
    secret: str | bytes | None = None,
    clock: RedisClock | None = None,
) -> list[NodeEntry]:
    """Every entry of the registry, sorted by node id, aged on Redis' clock (``TIME`` read in
    the same round trip; ``now`` overrides it) and checked against ``secret`` (Redis errors
    propagate). ``clock``, if given, learns Redis' time from that round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.nodes)
    queue_time(pipe, keys.nodes)
    sent = time.time()
    raw_entries, reply = pipe.execute()
    redis_now = redis_seconds(reply)
    if clock is not None:
        clock.observe(redis_now, sent, time.time())
    now = redis_now if now is None else now
    rows = []
    for node_id, value in sorted(raw_entries.items()):
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
        distrust = entry_trust(entry, name, secret)
        rows.append(NodeEntry(name, entry, age, is_stale(entry, now), distrust))
    return rows


def live_nodes(
    client: RedisClient,
    keys: RedisKeys,
    now: float | None = None,
    *,
    secret: str | bytes | None = None,
) -> list[NodeEntry]:
    """The entries of nodes whose heartbeat is fresh (and, with ``secret``, signed with it)."""
    return [row for row in read_nodes(client, keys, now, secret=secret) if row.live]
