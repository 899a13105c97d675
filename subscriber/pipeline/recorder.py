"""What a node writes to Redis so the fleet's decisions outlive reconnects, restarts and
Redis' own data loss (besides its registry heartbeat).

- :meth:`Recorder.record`: after applying a message from the channel that ``:latest`` does
  not hold (an operator's raw ``redis-cli PUBLISH … force``, or an unversioned message that
  the publisher's script could not order), the node puts it there, unless ``:latest`` moved
  on since that message was sent (compare-and-set on the digest of what it held before).
  A forced rollback then survives a reconnect's catch-up and a node's restart.
- :meth:`Recorder.supersede`: a catch-up that finds ``:latest`` older than the decision the
  node serves (a failover to a replica that missed a publication the node heard from the old
  master) puts the node's decision back (compare-and-set), so a node started later serves it.
- :meth:`Recorder.restore`: on every (re)connect, ``:version`` is raised to the version the
  node serves, and an empty ``:latest`` gets the node's decision back. After a restart
  without persistence, ``FLUSHALL`` or a failover to a lagging replica, allocated versions
  continue above what the fleet serves instead of restarting at 1.
- :meth:`Recorder.reannounce`: what ``:latest`` holds, published after Redis lost its data
  under a version that restarted (below what the node served), is announced again under a
  fresh version above everything the node knows, so every node serves it.
- :meth:`Recorder.announce`: a checkpoint the node served from disk while Redis was away
  (newer than ``:latest``: its catch-up did not replace it) is announced when Redis returns,
  under the version the file carries (else a fresh one), so the nodes that stayed connected
  and the nodes started later serve it too, instead of the older ``:latest``.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import redis
from redis.commands.core import Script

from common.errors import InvalidNotification
from common.keys import EPOCH_BYTES, RedisKeys
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification, message_digest
from common.redis_io.connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts, follow_master
from common.redis_io.scripts import ALLOCATE, PUBLISH, RECORD, RESTORE
from common.textsafe import printable
from subscriber.model.plan import Candidate
from subscriber.model.snapshot import ServedModel

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
        """One of the scripts, registered on the client (built on first use), after asking
        the sentinels where the master is (``follow_master``): a write to a master a manual
        failover left behind would be lost when it is demoted."""
        client = self._lazy.get()
        follow_master(client)
        if client is not self._bound:
            self._bound = client
            self._scripts = {
                "record": client.register_script(RECORD),
                "restore": client.register_script(RESTORE),
                "allocate": client.register_script(ALLOCATE),
                "publish": client.register_script(PUBLISH),
            }
        return self._scripts[name]

    def record(self, candidate: Candidate, served: int = 0) -> str:
        """Make an applied channel message the ``:latest`` decision if nothing newer took its
        place; ``:version`` is raised to the version it is served under, recorded or not
        (``served``: an unversioned message is served under its file's version, and a
        trainer's next allocation must come above it, else every node would judge that
        checkpoint stale);
        returns ``present``, ``recorded``, ``superseded``, ``targeted`` (a message for some
        nodes only is never recorded: a canary must not spread by catch-up) or ``error``."""
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
                        str(max(candidate.version, served)),
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

    def supersede(self, message: bytes, version: int, held: str) -> str:
        """Put this node's decision ``message`` (``version``) into ``:latest`` in place of the
        older message the catch-up found there (its sha1 ``held``), unless ``:latest`` changed
        since (compare-and-set); returns what :meth:`record` returns."""
        try:
            code = int(
                self._script("record")(
                    keys=[self.keys.latest, self.keys.version],
                    args=[message, held, str(version), ""],
                )
            )
        except REDIS_ERRORS as exc:
            log.warning("could not put the served decision back into %s: %s", self.keys.latest, exc)
            return "error"
        outcome = _RECORDED.get(code, "error")
        if outcome == "recorded":
            self._last_recorded = message_digest(message)
            log.warning(
                "%s held an older decision than this node serves (a failover to a replica that "
                "missed it?): put version %d back there",
                self.keys.latest,
                version,
            )
        return outcome

    def restore(self, served: ServedModel | None, highest: int = 0) -> tuple[bool, bool, str]:
        """Raise ``:version`` to the served version (or ``highest``, the highest this node
        knows of), refill an empty ``:latest``, set ``:epoch`` if there is none; returns
        (counter raised, :latest restored, the epoch token; ``""`` if Redis failed). Errors
        are logged, never raised."""
        version = max(served.version if served else 0, highest)
        message = served.message if served and served.message else b""
        try:
            raised, restored, epoch = self._script("restore")(
                keys=[self.keys.version, self.keys.latest, self.keys.epoch],
                args=[str(version), message, secrets.token_hex(8), str(EPOCH_BYTES)],
            )
        except REDIS_ERRORS as exc:
            log.debug("could not restore %s / %s: %s", self.keys.version, self.keys.latest, exc)
            return False, False, ""
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
        token = epoch.decode(errors="replace") if isinstance(epoch, bytes) else str(epoch or "")
        return bool(raised), bool(restored), token

    def announce(self, model: ServedModel, *, node_id: str) -> str:
        """Announce ``model`` (served from disk while Redis was away) unless ``:latest``
        already names it or was decided after the file was written; returns ``present``,
        ``older``, ``announced``, ``conflict`` or ``error``."""
        try:
            follow_master(self._lazy.get())
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
                if model.version > 0 and held.version > 0:
                    if model.version <= held.version:
                        return "older"  # both versioned: the versions decide
                else:
                    issued = held.issued_at  # a bare message has no time of its own
                    if issued is not None and model.mtime_ns <= issued.timestamp() * 1e9:
                        return "older"  # :latest was decided after this file was written
            # A file that carries its version (fks train writes it) is announced under that
            # version, the trainer's own numbering; an unversioned one gets a fresh version.
            now = datetime.now(UTC)
            draft = CheckpointNotification(
                model_path=where,
                model_name=model.model_name,
                version=model.version,
                saved_at=model.saved_at or now,
                training_step=model.training_step,
                metadata={**model.metadata, "announced_by": node_id},
                sha256=model.sha256,
                issued_at=now,
            )
            version, outcome = self._publish(draft, allocate=model.version == 0)
        except REDIS_ERRORS as exc:
            log.warning("could not announce the checkpoint served from disk: %s", exc)
            return "error"
        log.warning(
            "announced %s as version %d: it was served from disk while Redis was away and is "
            "newer than %s (%s)",
            printable(model.path),
            version,
            self.keys.latest,
            outcome,
        )
        return outcome

    def reannounce(
        self, held: CheckpointNotification, digest: str, *, node_id: str, floor: int
    ) -> str:
        """Announce ``held`` (what ``:latest`` holds, published after Redis lost its data,
        under a version that restarted; ``digest``: the sha1 of its bytes there) again under
        a fresh version above ``floor`` (every version this node knows), so every node takes
        it for the newer decision it is, unless ``:latest`` holds something else by then (a
        newer publication, or another node's announcement of it); returns ``announced``,
        ``superseded``, ``conflict`` or ``error``."""
        draft = held.model_copy(
            update={
                "version": 0,
                "issued_at": datetime.now(UTC),
                "metadata": {**held.metadata, "announced_by": node_id},
                "signature": None,
            }
        )
        try:
            version, outcome = self._publish(draft, allocate=True, floor=floor, held=digest)
        except REDIS_ERRORS as exc:
            log.warning("could not announce again what %s holds: %s", self.keys.latest, exc)
            return "error"
        if outcome == "superseded":
            log.info("%s moved on before %s was announced again: not announced",
                     self.keys.latest, printable(held.model_path))  # fmt: skip
            return outcome
        log.warning(
            "announced %s again as version %d (it was version %d, published after Redis lost "
            "its data): %s",
            printable(held.model_path),
            version,
            held.version,
            outcome,
        )
        return outcome

    def _publish(
        self,
        draft: CheckpointNotification,
        *,
        allocate: bool,
        floor: int = 0,
        tries: int = 3,
        held: str = "",
    ) -> tuple[int, str]:
        """Sign and publish ``draft`` by the publisher's script (a fresh version above the
        counter, ``:latest`` and ``floor`` when ``allocate``, again if the counter passed it
        meanwhile; with ``held``, only while ``:latest``'s bytes have that sha1); (version,
        ``announced``, ``superseded`` or ``conflict``). Raises what redis-py raises."""
        version = draft.version
        if allocate:
            version = int(
                self._script("allocate")(
                    keys=[self.keys.version, self.keys.latest], args=[str(floor)]
                )
            )
        notification = draft.model_copy(update={"version": version})
        if self.secret:
            notification = notification.signed(self.secret, self.keys.instance_id)
        status = self._script("publish")(
            keys=[self.keys.latest, self.keys.version],
            args=[
                self.keys.channel,
                notification.to_json(),
                str(version),
                "0",
                notification.sha256 or "",
                notification.model_path,
                "1" if allocate else "0",
                "0",
                "SPUBLISH" if self.sharded else "PUBLISH",
                held,
            ],
        )[2]
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status == "reallocate" and tries > 1:
            return self._publish(draft, allocate=True, floor=floor, tries=tries - 1, held=held)
        if status == "reallocate":
            raise redis.ResponseError("the version counter kept moving past each allocation")
        outcomes = {"conflict": "conflict", "moved": "superseded"}
        return version, outcomes.get(status, "announced")

    def close(self) -> None:
        self._lazy.close()


def _parse(raw: bytes | None) -> CheckpointNotification | None:
    if raw is None or len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        return CheckpointNotification.from_message(raw)
    except InvalidNotification:
        return None
