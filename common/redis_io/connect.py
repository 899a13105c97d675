"""The Redis-connection seam: ``REDIS_URL`` → a redis-py client (SPEC §10).

Every part that talks to Redis (the publisher, the listener, the node registry, the
recorder, the blob fetcher and ``fks status``) builds its client here, so each URL form of
``common/redis_io/url.py`` works everywhere:

- one server: ``redis.Redis.from_url`` (``redis://``, ``rediss://``, ``unix://``);
- Sentinel: ``redis.sentinel.Sentinel(...).master_for(service)``, a client whose every new
  connection asks the sentinels where the master is now. :class:`FailoverAwareSentinel` asks
  every sentinel and believes the newest configuration (the highest ``config-epoch``, and
  during a failover the sentinel running it): redis-py's own ``SENTINEL MASTERS`` lookup names
  the old master until the failover has ended, while the promoted replica already takes
  writes, and writes to the old master are lost when it is demoted;
- Cluster: ``redis.cluster.RedisCluster``, which follows ``MOVED`` and refreshes its slot map
  after a node fails. Building one already talks to the cluster, so :class:`LazyRedis` builds
  it on first use: a node starts, and a trainer saves, while Redis is away.

The clients never retry on their own (``Retry(NoBackoff(), 0)``): each caller decides, within
its own time bound, whether one retry is worth it (the publisher, after a failover).
:data:`REDIS_ERRORS` is what a Redis that is away or failing over raises, cluster errors
included (redis-py's ``RedisClusterException`` is not a ``RedisError``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from common.redis_io.url import RedisTarget, parse_redis_url

__all__ = [
    "REDIS_ERRORS",
    "FailoverAwareSentinel",
    "LazyRedis",
    "RedisClient",
    "Timeouts",
    "connect",
    "close_client",
    "follow_master",
    "has_sharded_pubsub",
    "is_readonly",
    "sentinel_for",
    "sentinel_of",
]

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
SENTINEL_TIMEOUT_S = 0.5  # a sentinel asked where the master is: every one is asked
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 1.0
    command: float = 1.0


def _target(url: str | RedisTarget) -> RedisTarget:
    return url if isinstance(url, RedisTarget) else parse_redis_url(url)


def _socket_kwargs(timeouts: Timeouts) -> dict[str, Any]:
    return {
        "socket_connect_timeout": timeouts.connect,
        "socket_timeout": timeouts.command,
        "retry": Retry(NoBackoff(), 0),  # no retries, on timeouts neither
    }


def connect(
    url: str | RedisTarget,
    timeouts: Timeouts | None = None,
    *,
    decode_responses: bool = False,
) -> RedisClient:
    """A client for ``url`` (any form); a cluster client is built (and so contacted) now."""
    target = _target(url)
    kwargs = _socket_kwargs(timeouts or Timeouts()) | {"decode_responses": decode_responses}
    if target.kind == "server":
        return redis.Redis.from_url(target.url, **kwargs)
    if target.kind == "sentinel":
        sentinel = sentinel_for(target, timeouts)
        master: redis.Redis = sentinel.master_for(target.service, db=target.db, **kwargs)
        return master
    nodes = [ClusterNode(host, port) for host, port in target.hosts]  # type: ignore[no-untyped-call]
    options: dict[str, Any] = kwargs | target.credentials() | target.tls_kwargs()
    return RedisCluster(
        startup_nodes=nodes,
        require_full_coverage=False,
        dynamic_startup_nodes=False,  # keep the given nodes: a promoted replica is found anew
        **options,
    )


def sentinel_for(target: RedisTarget, timeouts: Timeouts | None = None) -> Sentinel:
    """The :class:`~redis.sentinel.Sentinel` of a ``redis+sentinel://`` target: the
    userinfo for the master, ``sentinel_username``/``sentinel_password`` for the sentinels,
    TLS to both with ``rediss+sentinel://``."""
    if target.kind != "sentinel":
        raise ValueError(f"{target.kind} URL is not a sentinel URL")
    given = timeouts or Timeouts()
    socket = _socket_kwargs(given)
    quick = Timeouts(min(given.connect, SENTINEL_TIMEOUT_S), min(given.command, SENTINEL_TIMEOUT_S))
    sentinel_kwargs: dict[str, Any] = _socket_kwargs(quick) | target.tls_kwargs()
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    # one dict of the master's connection options: Sentinel() takes them as **kwargs beside
    # its own named parameters, which none of these keys is
    master_kwargs: dict[str, Any] = socket | target.credentials() | target.tls_kwargs()
    return FailoverAwareSentinel(
        list(target.hosts), sentinel_kwargs=sentinel_kwargs, **master_kwargs
    )


class FailoverAwareSentinel(Sentinel):
    """A :class:`~redis.sentinel.Sentinel` that names the master of the newest
    configuration among all the sentinels that answer."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        best: tuple[tuple[int, bool], tuple[str, int]] | None = None
        errors = []
        sentinels: list[Any] = self.sentinels
        for sentinel in sentinels:
            try:
                state = sentinel.sentinel_master(service_name)
                address = sentinel.sentinel_get_master_addr_by_name(service_name)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                where = sentinel.connection_pool.connection_kwargs
                errors.append(f"{where.get('host')}:{where.get('port')}: {exc}")
                continue
            if not address:
                continue
            flags = str(state.get("flags", ""))
            rank = (int(state.get("config-epoch", 0) or 0), "failover_in_progress" in flags)
            host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
            if best is None or rank > best[0]:
                best = (rank, (host, int(address[1])))
        if best is None:
            detail = f": {', '.join(errors)}" if errors else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        return best[1]


def has_sharded_pubsub(client: RedisClient) -> bool:
    """Whether the server has ``SPUBLISH``/``SSUBSCRIBE``: Redis 7 or newer (``INFO server``;
    in a cluster, of one node)."""
    if isinstance(client, RedisCluster):
        info: Any = client.info("server", target_nodes=RedisCluster.RANDOM)
    else:
        info = client.info("server")
    if isinstance(info, dict) and "redis_version" not in info and info:
        info = next(iter(info.values()))  # keyed by node
    version = str(info.get("redis_version", "0")) if isinstance(info, dict) else "0"
    major = version.split(".")[0]
    return major.isdigit() and int(major) >= 7


def close_client(client: RedisClient | None) -> None:
    """Close ``client`` and, behind Sentinel, its connections to the sentinels."""
    if client is None:
        return
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()
    client.close()


def sentinel_of(client: RedisClient) -> Sentinel | None:
    """The :class:`Sentinel` a master client asks, or None for other clients."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return manager if isinstance(manager, Sentinel) else None


def is_readonly(exc: BaseException) -> bool:
    """True for a write refused by a replica: a master demoted under its clients (plain or
    inside a script's error text, as Redis words it from Lua)."""
    return isinstance(exc, redis.ReadOnlyError) or (
        isinstance(exc, redis.ResponseError) and "READONLY" in str(exc)
    )


def follow_master(client: RedisClient) -> None:
    """Behind Sentinel: ask where the master is now; redis-py's pool drops its connections
    to a former master when the address changed. After a manual ``SENTINEL FAILOVER`` the old
    master stays up and writable for seconds, so a client that waits for an error writes
    there, and the write is lost when it is demoted. Elsewhere: nothing (Redis errors
    propagate)."""
    pool = client.connection_pool if isinstance(client, redis.Redis) else None
    if pool is not None and hasattr(pool, "get_master_address"):
        pool.get_master_address()


class LazyRedis:
    """A client built on first use and kept; ``get()`` raises :data:`REDIS_ERRORS` while
    Redis cannot be reached (a cluster client cannot be built without its cluster)."""

    def __init__(
        self,
        url: str | RedisTarget,
        timeouts: Timeouts | None = None,
        *,
        decode_responses: bool = False,
    ) -> None:
        self.target = _target(url)
        self.timeouts = timeouts or Timeouts()
        self.decode_responses = decode_responses
        self._client: RedisClient | None = None
        self._lock = threading.Lock()

    def get(self) -> RedisClient:
        with self._lock:
            if self._client is None:
                self._client = connect(
                    self.target, self.timeouts, decode_responses=self.decode_responses
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        close_client(client)
