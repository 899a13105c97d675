"""The send of a notification (SPEC §2, §3, §10): one call of a Lua script that PUBLISHes
the message and moves ``:latest`` by the rule of ``common/latest.py`` (a newer version, or a
forced decision), a missing version allocated first by another script above the counter,
``:latest`` and what this publisher sent before (monotonic even after Redis lost its data),
and a version already naming another checkpoint refused (``conflict``). :class:`Announcer`
owns the Redis side of it: the client (``REDIS_URL`` may name a Sentinel service or a
Cluster; behind Sentinel the master is asked for anew before each send), the two scripts,
Redis' clock (``issued_at`` is stamped on it), and the one retry after a failover
(``publisher/failover.py``): a lost connection or a ``READONLY`` demoted master, the master
found anew, the same message sent **once** more. With ``FKS_SHARDED_PUBSUB=true`` the script
sends ``SPUBLISH`` (Redis >= 7). Redis being down is a result, never an exception.
"""

from __future__ import annotations

import logging
import time

import redis
from redis.commands.core import Script

from common.closing import Closing
from common.fleet import NodeEntry, read_nodes
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_io.clock import RedisClock, sample
from common.redis_io.connect import (
    REDIS_ERRORS,
    LazyRedis,
    RedisClient,
    Timeouts,
    follow_master,
    has_sharded_pubsub,
    is_readonly,
)
from common.redis_io.scripts import ALLOCATE, PUBLISH
from common.settings import redact_url
from common.textsafe import printable
from publisher.failover import Failover, failing_over, script_error, send_with_one_retry
from publisher.result import NotifyResult, not_sent, redis_unavailable, unconfirmed

__all__ = ["CLOCK_REFRESH_S", "SOCKET_TIMEOUT_S", "Announcer"]

log = logging.getLogger("publisher.notifier")

SOCKET_TIMEOUT_S = 1.0
CLOCK_REFRESH_S = 60.0  # how long a measurement of Redis' clock is trusted


class Announcer(Closing):
    """Publishes notifications of one instance on one Redis (a connection kept between them:
    cheap to keep for a whole training run)."""

    def __init__(
        self,
        redis_url: str,
        keys: RedisKeys,
        *,
        secret: str | None,
        sharded: bool,
        client: RedisClient | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self.sharded = sharded
        self.retries = 0  # notifications that needed their one retry after a failover
        self.secret = secret
        self._given = client
        self._lazy = LazyRedis(self.redis_url, Timeouts(SOCKET_TIMEOUT_S, SOCKET_TIMEOUT_S))
        self._bound: RedisClient | None = None  # the client the scripts are registered on
        self._allocate: Script
        self._publish: Script
        self._spublish: tuple[RedisClient, bool] | None = None
        if client is not None or self._lazy.target.kind != "cluster":
            self._redis()  # no connection yet: one server and Sentinel clients are lazy
        self._floor = 0  # the highest version this notifier published
        # Redis' clock: issued_at is stamped on it, so a node judges a forced message's age
        # on the same clock whatever this machine's says (common/redis_io/clock.py)
        self.clock = RedisClock()
        self._clock_at = -CLOCK_REFRESH_S

    def _send(self, path: str, draft: CheckpointNotification, version: int | None) -> NotifyResult:
        """Allocate a version if none was given, sign, publish; once more after a failover
        (``publisher/failover.py``)."""

        tries = 0

        def attempt(message: CheckpointNotification, allocate: bool) -> NotifyResult:
            nonlocal tries
            tries += 1  # a retry sends the very message of the first try
            return self._announce(
                path, message, allocate=allocate, fresh=version is None, stamp=tries == 1
            )

        return send_with_one_retry(
            attempt,
            draft,
            allocate=version is None,
            before_retry=self._before_retry,
            report=lambda result: self._give_up(path, result),
            where=redact_url(self.redis_url),
        )

    def _before_retry(self) -> None:
        self.retries += 1
        self._rediscover()

    def _announce(
        self,
        path: str,
        draft: CheckpointNotification,
        *,
        allocate: bool,
        fresh: bool,
        stamp: bool = True,
        tries: int = 3,
    ) -> NotifyResult:
        """One try: allocate (or ask Redis' time), then the publish script (``fresh``: the
        version was allocated for this notification; ``stamp``: set ``issued_at`` to Redis'
        time, as the nodes judge it). Raises :class:`~publisher.failover.Failover`
        (carrying the result to return if the retry fails too) when the master was lost."""
        try:
            client = self._redis()
            follow_master(client)
            if self.sharded and not self._has_spublish(client):
                why = (
                    "sharded_pubsub_unsupported: FKS_SHARDED_PUBSUB=true needs Redis >= 7 "
                    "(SPUBLISH); this server has no such command"
                )
                return self._not_sent(path, why, draft)
            if allocate:
                allocated = self._allocate(
                    keys=[self.keys.version, self.keys.latest], args=[str(self._floor)]
                )
                draft = draft.model_copy(update={"version": int(allocated)})
            if not allocate or (stamp and self._clock_stale()):
                # nothing of ours is sent until Redis has answered once: the node serving
                # :latest, in a cluster too (where PING would ask any node); its TIME
                sample(client, self.keys.latest, self.clock)
                self._clock_at = time.monotonic()
            if stamp:
                draft = draft.model_copy(update={"issued_at": self.clock.now_datetime()})
        except redis.ResponseError as exc:
            why = f"version_unavailable: {exc}"
            if is_readonly(exc) or failing_over(exc):
                raise Failover(NotifyResult(False, why, draft, outcome="not_sent")) from None
            return self._not_sent(path, why, draft)
        except REDIS_ERRORS as exc:
            why = redis_unavailable(exc)
            if failing_over(exc):
                raise Failover(NotifyResult(False, why, draft, outcome="not_sent")) from None
            return self._not_sent(path, why, draft)
        message = draft.signed(self.secret, self.keys.instance_id) if self.secret else draft
        try:
            receivers, moved, status, where = self._publish(
                keys=[self.keys.latest, self.keys.version],
                args=[
                    self.keys.channel,
                    message.to_json(),
                    str(message.version),
                    "1" if message.force else "0",
                    message.sha256 or "",
                    message.model_path,
                    "1" if fresh else "0",
                    "1" if message.nodes is not None else "0",
                    "SPUBLISH" if self.sharded else "PUBLISH",
                ],
            )
        except redis.ResponseError as exc:
            why = script_error(exc, self.sharded)
            if is_readonly(exc) or failing_over(exc):
                raise Failover(NotifyResult(False, why, draft, outcome="not_sent")) from None
            return self._not_sent(path, why, draft)
        except REDIS_ERRORS as exc:
            result = NotifyResult(
                False, f"unconfirmed: {type(exc).__name__}: {exc}", message, outcome="unknown"
            )
            if failing_over(exc):
                # The script is safe to run twice: the same version of the same checkpoint
                # moves nothing, and a node judges a repeated message once.
                raise Failover(result) from None
            return self._unconfirmed(path, result)
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "reallocate" and allocate and tries > 1:
            # the counter passed the allocated version meanwhile (a node raised it after
            # Redis lost its data): a fresh version, signed anew, nothing was published
            return self._announce(
                path, draft, allocate=True, fresh=fresh, stamp=stamp, tries=tries - 1
            )
        if status == "reallocate":
            why = "version_unavailable: the version counter kept moving past each allocation"
            return self._not_sent(path, why, draft)
        if status == "conflict":
            held = where.decode(errors="replace") if isinstance(where, bytes) else str(where)
            why = (
                f"conflict: version {message.version} already names {held or 'another checkpoint'}"
                " in :latest; nothing published (one version names one checkpoint)"
            )
            log.warning("checkpoint %s not announced: %s", printable(path), printable(why))
            return NotifyResult(False, why, message, outcome="conflict")
        self._floor = max(self._floor, message.version)
        log.info(
            "announced %s version %d on %s to %d receiver(s)%s",
            printable(path),
            message.version,
            self.keys.channel,
            receivers,
            "" if moved else " (:latest holds a newer decision)",
        )
        return NotifyResult(True, "published", message, int(receivers), bool(moved))

    def _redis(self) -> RedisClient:
        """The client, its two scripts registered (a cluster client is built on first use)."""
        client = self._given or self._lazy.get()
        if self._bound is not client:
            self._allocate = client.register_script(ALLOCATE)
            self._publish = client.register_script(PUBLISH)
            self._bound = client
        return client

    def _has_spublish(self, client: RedisClient) -> bool:
        """Whether the server knows SPUBLISH (asked once per client)."""
        if self._spublish is None or self._spublish[0] is not client:
            self._spublish = (client, has_sharded_pubsub(client))
        return self._spublish[1]

    def _rediscover(self) -> None:
        """After a failover: forget every connection, so the next one finds the master."""
        client = self._bound
        if isinstance(client, redis.Redis):
            client.connection_pool.disconnect()

    def _give_up(self, path: str, result: NotifyResult) -> NotifyResult:
        """Log the outcome of a notification whose retry failed too; return it."""
        if result.outcome == "unknown":
            return self._unconfirmed(path, result)
        assert result.notification is not None
        return self._not_sent(path, result.reason, result.notification)

    def _unconfirmed(self, path: str, result: NotifyResult) -> NotifyResult:
        return unconfirmed(path, result, self.redis_url)

    def _not_sent(self, path: str, why: str, draft: CheckpointNotification) -> NotifyResult:
        return not_sent(path, why, draft, self.redis_url)

    def client(self) -> RedisClient:
        """The Redis client this notifier publishes with."""
        return self._redis()

    def _clock_stale(self) -> bool:
        return time.monotonic() - self._clock_at >= CLOCK_REFRESH_S

    def nodes(self) -> list[NodeEntry]:
        """Every entry of the node registry, aged on Redis' clock and, with a secret, believed
        only when signed with it (Redis errors propagate)."""
        rows = read_nodes(self._redis(), self.keys, secret=self.secret, clock=self.clock)
        self._clock_at = time.monotonic()
        return rows

    def current_version(self) -> int | None:
        """The ``:version`` counter (the newest version allocated), or None if unreachable
        or not a decimal counter (a Redis writer's garbage)."""
        try:
            raw = self._redis().get(self.keys.version)
        except REDIS_ERRORS:
            return None
        if raw is None:
            return 0
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return int(text) if text.isdecimal() and text.isascii() else None

    def close(self) -> None:
        self._lazy.close()
