"""The trainer's side: announce a saved checkpoint on Redis (SPEC §2, §3, §6).

One notification is one call of a Lua script that PUBLISHes the message and moves
``:latest`` by the rule of ``common/latest.py`` (a newer version, or a forced decision), so
subscribers that were away catch up on exactly the latest decision. A version already held
by ``:latest`` for another checkpoint is refused: one version names one checkpoint. A missing
version is allocated first by another script, above the counter, ``:latest`` and what this
notifier published before, so versions stay monotonic even after Redis lost its data.

Redis being down is never an exception for the trainer: the checkpoint is already on disk, so
:meth:`CheckpointNotifier.notify` returns a :class:`NotifyResult` whose ``outcome`` says what
is known: ``published``, ``not_sent`` (nothing reached Redis), ``unknown`` (the message was
sent but Redis did not answer in time: it may still be published), ``conflict`` or
``disabled``, within the client's 1 s connect/read timeouts.

Redis beyond one server (SPEC §10, ``common/redis_io/connect.py``): ``REDIS_URL`` may name a
Sentinel service or a Cluster. A failover is a reconnect: when the connection is lost, or a
demoted master answers ``READONLY``, the notifier finds the master anew and tries **once**
more (so the bound is twice the timeouts; ``publisher/failover.py``). Behind Sentinel it
also asks the sentinels where the master is before each notification: after a manual
``SENTINEL FAILOVER`` the old master stays up, writable, for seconds, and a write there
would be lost. With ``FKS_SHARDED_PUBSUB=true`` the script sends ``SPUBLISH`` (Redis >= 7)
instead of ``PUBLISH``.

Rollouts (SPEC §11, ``publisher/acks.py``): ``nodes=[...]`` targets some nodes only (the
others ack ``ignored``; ``:latest`` does not move, so a canary never spreads by catch-up);
``wait_for=N`` or ``"all"`` waits up to ``timeout`` seconds for the nodes' acks, subscribed
before publishing, and returns them in ``NotifyResult.acks``. Waiting with no live node in the
registry sends nothing (``not_sent``, "no live nodes"); ids in ``nodes`` that no live node
has are warned about by name (``NotifyResult.unknown_nodes``).

A checkpoint can travel with its notification (SPEC §9, ``publisher/upload.py``):
``upload_to="s3://bucket/prefix/"`` (or ``FKS_UPLOAD_TO``) uploads the file first and
announces its URL with its sha256; ``transport="redis"`` stores its bytes as a blob in this
Redis (10 s timeouts) and announces ``redis-blob:<sha256>`` (``publisher/travel.py``). A
failed upload is ``not_sent`` too, never an exception. What a notification did is a
:class:`~publisher.result.NotifyResult`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import redis
from redis.commands.core import Script

from common.ack import answer_digest
from common.checkpoint import file_sha256
from common.fleet import NodeEntry, read_nodes
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
from common.remote import is_url
from common.settings import Settings, keys_for, redact_url
from common.textsafe import printable
from publisher.acks import AckWaiter, WaitFor
from publisher.failover import Failover, failing_over, script_error, send_with_one_retry
from publisher.result import NotifyResult, Outcome, not_sent, unconfirmed
from publisher.travel import BlobStore, travel
from publisher.upload import upload_url

__all__ = ["CheckpointNotifier", "NotifyResult", "Outcome", "notify_checkpoint"]

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 1.0
BLOB_TIMEOUT_S = 10.0
CLOCK_REFRESH_S = 60.0  # how long a measurement of Redis' clock is trusted

Transport = Literal["path", "redis"]


class CheckpointNotifier:
    """A reusable publisher for one instance; cheap to keep for a whole training run."""

    def __init__(
        self,
        redis_url: str | None = None,
        instance_id: str | None = None,
        *,
        secret: str | None = None,
        enabled: bool | None = None,
        settings: Settings | None = None,
        client: RedisClient | None = None,
    ) -> None:
        base = settings or Settings()
        self.redis_url = redis_url or base.redis_url
        self.keys = keys_for(instance_id or base.instance_id, self.redis_url)
        self.sharded = base.sharded_pubsub
        self.retries = 0  # notifications that needed their one retry after a failover
        self.secret = secret if secret is not None else base.secret
        self.enabled = base.enable_checkpoint_notify if enabled is None else enabled
        self.upload_to = base.upload_to
        self.blob_keep = base.blob_keep
        self.blob_max_bytes = base.blob_max_bytes
        self._blob_client: LazyRedis | None = None
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

    def notify(
        self,
        model_path: str | os.PathLike[str],
        model_name: str = "",
        *,
        version: int | None = None,
        training_step: int = 0,
        metadata: Mapping[str, object] | None = None,
        sha256: str | None = None,
        force: bool = False,
        saved_at: datetime | None = None,
        hash_file: bool = True,
        upload_to: str | None = None,
        transport: Transport = "path",
        nodes: Sequence[str] | None = None,
        wait_for: WaitFor | None = None,
        timeout: float = 10.0,
    ) -> NotifyResult:
        """Publish one notification for ``model_path`` (made absolute; a URL is sent as is).

        ``version=None`` allocates the next one (above ``:version``, ``:latest`` and what this
        notifier published before); ``sha256=None`` hashes the file
        when it is readable here (``hash_file=False`` skips that). ``upload_to`` (default
        ``FKS_UPLOAD_TO``) uploads the file and announces its URL; ``transport="redis"``
        stores it as a blob and announces ``redis-blob:<sha256>``. ``nodes`` targets those
        nodes only; ``wait_for`` (an int >= 1 or ``"all"``) waits up to ``timeout`` seconds
        for the acks. Invalid arguments raise ``ValueError``; an unreachable Redis or object
        store does not raise.
        """
        if wait_for is not None and wait_for != "all":
            if isinstance(wait_for, bool) or not isinstance(wait_for, int) or wait_for < 1:
                raise ValueError(f"wait_for must be an int >= 1 or 'all', got {wait_for!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if transport not in ("path", "redis"):
            raise ValueError(f"transport must be 'path' or 'redis', got {transport!r}")
        if transport == "redis" and upload_to is not None:
            raise ValueError("a checkpoint travels by upload_to or by transport='redis', not both")
        raw = os.fspath(model_path)
        remote = is_url(raw)
        path = raw if remote else os.path.abspath(raw)
        target = upload_to
        if target is None and transport == "path" and not remote:
            target = self.upload_to
        if (target is not None or transport == "redis") and remote:
            raise ValueError(f"{raw!r} is a URL: only a local file can be uploaded or stored")
        if target is not None:
            upload_url(path, target)  # a prefix that cannot be uploaded to is a ValueError
        if sha256 is None and hash_file and not remote and os.path.isfile(path):
            sha256 = file_sha256(path)
        fields: dict[str, Any] = {
            "model_path": path,
            "model_name": model_name,
            "version": 0 if version is None else version,
            "training_step": training_step,
            "metadata": dict(metadata or {}),
            "sha256": sha256,
            "force": force,
            "issued_at": datetime.now(UTC),  # restamped on Redis' clock when sent
            "nodes": None if nodes is None else tuple(nodes),
        }
        if saved_at is not None:
            fields["saved_at"] = saved_at
        draft = CheckpointNotification.model_validate(fields, strict=False)
        if not self.enabled:
            log.info("checkpoint notify disabled (ENABLE_CHECKPOINT_NOTIFY=false): %s", path)
            return NotifyResult(False, "disabled", draft, outcome="disabled")
        live: list[str] = []
        if wait_for is not None or draft.nodes is not None:
            try:
                live = [row.node_id for row in self.nodes() if row.live]
            except REDIS_ERRORS as exc:
                why = f"redis_unavailable: {type(exc).__name__}: {exc}"
                return self._not_sent(path, why, draft)
        unknown = tuple(n for n in draft.nodes or () if n not in live)
        if unknown:
            log.warning(
                "nodes %s are unknown or not live in %s: they will not hear this message",
                ", ".join(unknown),
                self.keys.nodes,
            )
        if wait_for is not None and not live:
            why = f"no live nodes in {self.keys.nodes}: nothing sent, nobody would answer"
            log.warning("checkpoint %s not announced: %s", printable(path), why)
            return NotifyResult(False, why, draft, outcome="not_sent", unknown_nodes=unknown)
        if target is not None or transport == "redis":
            moved = self._travel(path, draft, target)
            if isinstance(moved, NotifyResult):
                return moved
            draft = moved
        with contextlib.ExitStack() as stack:
            try:
                waiter = (
                    stack.enter_context(AckWaiter(self._redis(), self.keys, secret=self.secret))
                    if wait_for is not None
                    else None
                )
            except REDIS_ERRORS as exc:
                why = f"redis_unavailable: {type(exc).__name__}: {exc}"
                return self._not_sent(path, why, draft)
            sent_at = time.monotonic()
            result = self._send(path, draft, version)
            if waiter is None or not result.sent or result.notification is None:
                return replace(result, unknown_nodes=unknown)
            assert wait_for is not None
            sent = result.notification
            expected = tuple(n for n in live if wait_for == "all" or sent.targets(n))
            report = waiter.collect(
                answers=answer_digest(sent.to_json()),
                wait_for=wait_for,
                expected=expected,
                timeout=timeout,
                sent_at=sent_at,
            )
            return replace(result, acks=report, unknown_nodes=unknown)

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
        time, as the nodes judge it). Raises :class:`_Failover` (carrying the result to
        return if the retry fails too) when the master was lost."""
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
            why = f"redis_unavailable: {type(exc).__name__}: {exc}"
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

    def _travel(
        self, path: str, draft: CheckpointNotification, upload_to: str | None
    ) -> CheckpointNotification | NotifyResult:
        """Upload ``path`` (or store it as a blob); the notification naming it, or why not."""
        blobs = BlobStore(
            self._blobs, self.keys, max_bytes=self.blob_max_bytes, keep=self.blob_keep
        )
        moved = travel(path, draft, upload_to, blobs)
        return self._not_sent(path, moved, draft) if isinstance(moved, str) else moved

    def _blobs(self) -> RedisClient:
        """A client for blobs: a 64 MiB SET needs more than the 1 s of a notification."""
        if self._blob_client is None:
            timeouts = Timeouts(SOCKET_TIMEOUT_S, BLOB_TIMEOUT_S)
            self._blob_client = LazyRedis(self.redis_url, timeouts)
        return self._blob_client.get()

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
        """The ``:version`` counter (the newest version allocated), or None if unreachable."""
        try:
            raw = self._redis().get(self.keys.version)
        except REDIS_ERRORS:
            return None
        return int(raw) if raw is not None else 0

    def close(self) -> None:
        self._lazy.close()
        if self._blob_client is not None:
            self._blob_client.close()

    def __enter__(self) -> CheckpointNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def notify_checkpoint(
    model_path: str | os.PathLike[str],
    model_name: str = "",
    *,
    version: int | None = None,
    training_step: int = 0,
    metadata: Mapping[str, object] | None = None,
    sha256: str | None = None,
    force: bool = False,
    instance_id: str | None = None,
    redis_url: str | None = None,
    upload_to: str | None = None,
    transport: Transport = "path",
    nodes: Sequence[str] | None = None,
    wait_for: WaitFor | None = None,
    timeout: float = 10.0,
) -> NotifyResult:
    """Announce a saved checkpoint once (SPEC §6, §9, §11). Never raises because Redis (or
    the object store) is down. ``upload_to="s3://bucket/prefix/"`` uploads it first and
    announces its URL; ``transport="redis"`` stores it as a Redis blob; ``nodes`` targets
    some nodes only; ``wait_for=N`` or ``"all"`` waits up to ``timeout`` s for their acks."""
    with CheckpointNotifier(redis_url, instance_id) as notifier:
        return notifier.notify(
            model_path,
            model_name,
            version=version,
            training_step=training_step,
            metadata=metadata,
            sha256=sha256,
            force=force,
            upload_to=upload_to,
            transport=transport,
            nodes=nodes,
            wait_for=wait_for,
            timeout=timeout,
        )
