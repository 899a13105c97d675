"""One listener session's connections to Redis, in any ``REDIS_URL`` form (SPEC §10).

A :class:`RedisLink` holds a client for the catch-up reads and a pub/sub connection
subscribed to the channels (``SSUBSCRIBE`` with ``FKS_SHARDED_PUBSUB=true``): the node's
instances' channels, all on that one connection (SPEC §13):

- one server: both to that server;
- Sentinel: both to the master the sentinels name now. :meth:`RedisLink.moved` asks them
  again (every ``ListenerTiming.master_check``): after a manual ``SENTINEL FAILOVER`` the old
  master stays up and its subscribers' sockets stay open, but nothing is published there any
  more; the session ends and the next one subscribes on the new master and catches up;
- Cluster: the client follows the slots; the pub/sub connection goes to the node that owns
  the first channel's slot (the only one that hears a sharded channel; any node hears the
  classic ``PUBLISH``, so one connection hears every instance's). Sharded channels of
  several instances lie in slots of their own: each instance then has a link of its own
  (``subscriber/group.py``). When that slot moves, Redis sends ``SUNSUBSCRIBE``: the
  listener ends the session on it and resubscribes where the slot went.
"""

from __future__ import annotations

import logging

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from common.redis_io.connect import (
    REDIS_ERRORS,
    RedisClient,
    Timeouts,
    close_client,
    connect,
    has_sharded_pubsub,
    sentinel_of,
)
from common.redis_io.url import RedisTarget

__all__ = ["RedisLink", "ShardedPubSubUnsupported"]

log = logging.getLogger(__name__)


class ShardedPubSubUnsupported(redis.RedisError):
    """``FKS_SHARDED_PUBSUB=true`` against a Redis without ``SSUBSCRIBE`` (before 7.0)."""


class RedisLink:
    def __init__(
        self,
        target: RedisTarget,
        channels: list[str],
        timeouts: Timeouts,
        *,
        sharded: bool = False,
    ) -> None:
        self.target = target
        self.channels = list(channels)
        if not self.channels:
            raise ValueError("a link subscribes to one channel at least")
        self.channel = self.channels[0]
        self.timeouts = timeouts
        self.sharded = sharded
        self.client: RedisClient | None = None
        self.pubsub: PubSub | None = None
        self._sentinel: Sentinel | None = None
        self._node_client: redis.Redis | None = None

    @property
    def confirmation(self) -> str:
        """The type of the message that confirms the subscription."""
        return "ssubscribe" if self.sharded else "subscribe"

    def open(self) -> PubSub:
        """Connect, check sharded pub/sub is there, send the subscription; the pub/sub."""
        client = self.client = connect(self.target, self.timeouts)
        if self.sharded:
            self._require_sharded(client)
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(self.channel)  # type: ignore[no-untyped-call]
            self._node_client = client.get_redis_connection(node)
            pubsub: PubSub = self._node_client.pubsub()
        else:
            self._sentinel = sentinel_of(client)
            pubsub = client.pubsub()
        self.pubsub = pubsub
        if self.sharded:
            for channel in self.channels:  # one command each: no cross-slot refusal
                pubsub.ssubscribe(channel)
        else:
            pubsub.subscribe(*self.channels)
        return pubsub

    @property
    def watches_master(self) -> bool:
        """Whether :meth:`moved` asks anyone (behind Sentinel)."""
        return self._sentinel is not None

    def address(self) -> tuple[str, int] | None:
        """Where the pub/sub connection is (host, port), once connected."""
        connection = self.pubsub.connection if self.pubsub is not None else None
        host, port = getattr(connection, "host", None), getattr(connection, "port", None)
        return (str(host), int(port)) if host is not None and port is not None else None

    def moved(self) -> str | None:
        """Why this session listens in the wrong place (the sentinels name another master),
        or None. A sentinel that cannot answer is no reason: the session goes on."""
        if self._sentinel is None:
            return None
        try:
            master = self._sentinel.discover_master(self.target.service)
        except REDIS_ERRORS as exc:
            log.debug("sentinels did not say where the master is: %s", exc)
            return None
        here = self.address()
        master = (str(master[0]), int(master[1]))
        if here is not None and master != here:
            return f"the sentinels name {master[0]}:{master[1]} as master, not {here[0]}:{here[1]}"
        return None

    def _require_sharded(self, client: RedisClient) -> None:
        if not has_sharded_pubsub(client):
            raise ShardedPubSubUnsupported(
                "FKS_SHARDED_PUBSUB=true needs Redis >= 7 (SSUBSCRIBE); this server is older: "
                "set FKS_SHARDED_PUBSUB=false or upgrade Redis"
            )

    def close(self, *, unsubscribe: bool) -> None:
        if self.pubsub is not None:
            try:
                if unsubscribe:
                    if self.sharded:
                        self.pubsub.sunsubscribe()  # type: ignore[no-untyped-call]
                    else:
                        self.pubsub.unsubscribe()  # type: ignore[no-untyped-call]
            except REDIS_ERRORS:
                pass
            try:
                self.pubsub.close()
            except REDIS_ERRORS:
                pass
        try:
            close_client(self.client)
        except REDIS_ERRORS:
            pass
