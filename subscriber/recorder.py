"""What a node writes to Redis so the fleet's decisions outlive reconnects, restarts and
Redis' own data loss (besides its registry heartbeat).

- :meth:`Recorder.record`: after applying a message from the channel that ``:latest`` does
  not hold (an operator's raw ``redis-cli PUBLISH … force``, or an unversioned message that
  the publisher's script could not order), the node puts it there, unless ``:latest`` moved
  on since that message was sent (compare-and-set on the digest of what it held before).
  A forced rollback then survives a reconnect's catch-up and a node's restart.
- :meth:`Recorder.restore`: on every (re)connect, ``:version`` is raised to the version the
  node serves, and an empty ``:latest`` gets the node's decision back. After a restart
  without persistence, ``FLUSHALL`` or a failover to a lagging replica, allocated versions
  continue above what the fleet serves instead of restarting at 1.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.keys import RedisKeys
from common.redis_scripts import RECORD, RESTORE
from subscriber.plan import Candidate
from subscriber.snapshot import ServedModel

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

_RECORDED = {0: "present", 1: "recorded", -1: "superseded"}


class Recorder:
    def __init__(self, redis_url: str, keys: RedisKeys, *, timeout: float = 0.5) -> None:
        self.keys = keys
        self._client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._record = self._client.register_script(RECORD)
        self._restore = self._client.register_script(RESTORE)

    def record(self, candidate: Candidate) -> str:
        """Make an applied channel message the ``:latest`` decision if nothing newer took its
        place; returns ``present``, ``recorded``, ``superseded`` or ``error``."""
        if candidate.raw is None:
            return "present"
        try:
            code = int(
                self._record(
                    keys=[self.keys.latest, self.keys.version],
                    args=[candidate.raw, candidate.latest_before, str(candidate.version)],
                )
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("could not record the applied decision in %s: %s", self.keys.latest, exc)
            return "error"
        outcome = _RECORDED.get(code, "error")
        if outcome == "recorded":
            log.info("recorded the applied decision in %s (it was not there)", self.keys.latest)
        elif outcome == "superseded":
            log.info("%s moved on since that message; a newer decision stands", self.keys.latest)
        return outcome

    def restore(self, served: ServedModel | None) -> tuple[bool, bool]:
        """Raise ``:version`` to the served version, refill an empty ``:latest``; returns
        (counter raised, :latest restored). Errors are logged, never raised."""
        version = served.version if served else 0
        message = served.message if served and served.message else b""
        try:
            raised, restored = self._restore(
                keys=[self.keys.version, self.keys.latest], args=[str(version), message]
            )
        except (redis.RedisError, OSError) as exc:
            log.debug("could not restore %s / %s: %s", self.keys.version, self.keys.latest, exc)
            return False, False
        if raised or restored:
            log.warning(
                "Redis had lost this instance's state (a restart without persistence, FLUSHALL "
                "or a failover?): %s",
                ", ".join(
                    part
                    for part, done in (
                        (f":version raised to {version}", raised),
                        (":latest restored to the served decision", restored),
                    )
                    if done
                ),
            )
        return bool(raised), bool(restored)

    def close(self) -> None:
        self._client.close()
