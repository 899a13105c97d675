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
- :meth:`Recorder.announce`: a checkpoint the node served from disk while Redis was away
  (newer than ``:latest``: its catch-up did not replace it) is announced when Redis returns,
  under the version the file carries (else a fresh one), so the nodes that stayed connected
  and the nodes started later serve it too, instead of the older ``:latest``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from redis.commands.core import Script

from common.errors import InvalidNotification
from common.keys import RedisKeys
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification, message_digest
from common.redis_connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts
from common.redis_scripts import ALLOCATE, PUBLISH, RECORD, RESTORE
from common.textsafe import printable
from subscriber.plan import Candidate
from subscriber.snapshot import ServedModel

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

_RECORDED = {0: "present", 1: "recorded", -1: "superseded", -2: "targeted"}


class Recorder:
    def __init__(
        self,
        redis_url: str,
        keys: RedisKeys,
        *,
        secret: str | None = None,
        timeout: float = 0.5,
        sharded: bool = False,
    ) -> None:
        self.keys = keys
        self.secret = secret
        self._last_recorded = ""  # sha1 of the last message this node put into :latest
        self.sharded = sharded
        self._lazy = LazyRedis(redis_url, Timeouts(timeout, timeout))
        self._bound: RedisClient | None = None
        self._scripts: dict[str, Script] = {}

    def _script(self, name: str) -> Script:
        """One of the scripts, registered on the client (built on first use)."""
        client = self._lazy.get()
        if client is not self._bound:
            self._bound = client
            self._scripts = {
                "record": client.register_script(RECORD),
                "restore": client.register_script(RESTORE),
                "allocate": client.register_script(ALLOCATE),
                "publish": client.register_script(PUBLISH),
            }
        return self._scripts[name]

    def record(self, candidate: Candidate) -> str:
        """Make an applied channel message the ``:latest`` decision if nothing newer took its
        place; returns ``present``, ``recorded``, ``superseded``, ``targeted`` (a message for
        some nodes only is never recorded: a canary must not spread by catch-up) or
        ``error``."""
        if candidate.raw is None:
            return "present"
        if candidate.targeted:
            return "targeted"
        try:
            code = int(
                self._script("record")(
                    keys=[self.keys.latest, self.keys.version],
                    args=[
                        candidate.raw,
                        candidate.latest_before,
                        str(candidate.version),
                        self._last_recorded,
                    ],
                )
            )
        except REDIS_ERRORS as exc:
            log.warning("could not record the applied decision in %s: %s", self.keys.latest, exc)
            return "error"
        outcome = _RECORDED.get(code, "error")
        if outcome in ("recorded", "present"):
            self._last_recorded = message_digest(candidate.raw)
        if outcome == "recorded":
            log.info("recorded the applied decision in %s (it was not there)", self.keys.latest)
        elif outcome == "superseded":
            log.info("%s moved on since that message; a newer decision stands", self.keys.latest)
        return outcome

    def restore(self, served: ServedModel | None, highest: int = 0) -> tuple[bool, bool]:
        """Raise ``:version`` to the served version (or ``highest``, the highest this node
        knows of), refill an empty ``:latest``; returns (counter raised, :latest restored).
        Errors are logged, never raised."""
        version = max(served.version if served else 0, highest)
        message = served.message if served and served.message else b""
        try:
            raised, restored = self._script("restore")(
                keys=[self.keys.version, self.keys.latest], args=[str(version), message]
            )
        except REDIS_ERRORS as exc:
            log.debug("could not restore %s / %s: %s", self.keys.version, self.keys.latest, exc)
            return False, False
        if restored:
            log.warning(
                "%s was empty (Redis lost its data? a restart without persistence, FLUSHALL, a "
                "failover): restored to the decision this node serves; :version %s",
                self.keys.latest,
                f"raised to {version}" if raised else "kept",
            )
        elif raised:
            log.info(
                "raised %s to %d, the highest version this node knows", self.keys.version, version
            )
        return bool(raised), bool(restored)

    def announce(self, model: ServedModel, *, node_id: str) -> str:
        """Announce ``model`` (served from disk while Redis was away) unless ``:latest``
        already names it or was decided after the file was written; returns ``present``,
        ``older``, ``announced``, ``conflict`` or ``error``."""
        try:
            size = int(self._lazy.get().strlen(self.keys.latest))
            if size > MAX_MESSAGE_BYTES:
                log.warning("%s holds %d bytes: not announcing over it", self.keys.latest, size)
                return "error"
            raw = self._lazy.get().get(self.keys.latest) if size else None
            held = _parse(raw if isinstance(raw, bytes) else None)
            where = model.origin or str(model.path)  # a remote checkpoint by its URL
            if held is not None:
                if held.sha256 == model.sha256 or held.model_path == where:
                    return "present"
                issued = held.issued_at  # a bare message has no time of its own
                if issued is not None and model.mtime_ns <= issued.timestamp() * 1e9:
                    return "older"  # :latest was decided after this file was written
                if 0 < model.version <= held.version:
                    return "older"  # the file's own version says :latest is newer
            # A file that carries its version (fks train writes it) is announced under that
            # version, the trainer's own numbering; an unversioned one gets a fresh version.
            allocated = model.version == 0
            version = model.version
            if allocated:
                version = int(
                    self._script("allocate")(keys=[self.keys.version, self.keys.latest], args=["0"])
                )
            now = datetime.now(UTC)
            notification = CheckpointNotification(
                model_path=where,
                model_name=model.model_name,
                version=version,
                saved_at=model.saved_at or now,
                training_step=model.training_step,
                metadata={**model.metadata, "announced_by": node_id},
                sha256=model.sha256,
                issued_at=now,
            )
            if self.secret:
                notification = notification.signed(self.secret)
            status = self._script("publish")(
                keys=[self.keys.latest, self.keys.version],
                args=[
                    self.keys.channel,
                    notification.to_json(),
                    str(version),
                    "0",
                    model.sha256,
                    where,
                    "1" if allocated else "0",
                    "0",
                    "SPUBLISH" if self.sharded else "PUBLISH",
                ],
            )[2]
        except REDIS_ERRORS as exc:
            log.warning("could not announce the checkpoint served from disk: %s", exc)
            return "error"
        outcome = "conflict" if status in (b"conflict", "conflict") else "announced"
        log.warning(
            "announced %s as version %d: it was served from disk while Redis was away and is "
            "newer than %s (%s)",
            printable(model.path),
            version,
            self.keys.latest,
            outcome,
        )
        return outcome

    def close(self) -> None:
        self._lazy.close()


def _parse(raw: bytes | None) -> CheckpointNotification | None:
    if raw is None or len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        return CheckpointNotification.from_message(raw)
    except InvalidNotification:
        return None
