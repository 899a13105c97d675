"""The trainer's side: announce a saved checkpoint on Redis (SPEC §2, §3, §6, §9, §11).

:class:`CheckpointNotifier` checks the arguments, lets the checkpoint travel first when asked
(an upload, a Redis blob: ``publisher/travel.py``), learns who is to hear it and answer
(``publisher/audience.py``), then sends it (``publisher/announcer.py``: the publish script,
the version allocated, one retry after a failover) and collects the acks. Redis or the object
store being down is never an exception for the trainer: the checkpoint is already on disk,
so :meth:`CheckpointNotifier.notify` returns a :class:`~publisher.result.NotifyResult` whose
``outcome`` says what is known: ``published``, ``not_sent`` (nothing reached Redis),
``unknown`` (sent, but Redis did not answer in time: it may still be published),
``conflict`` or ``disabled``, within the client's 1 s connect/read timeouts.
:func:`notify_checkpoint` does the same once, with a notifier of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from common.identity import file_sha256
from common.notification import CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts
from common.remote import is_url
from common.settings import Settings, keys_for
from publisher.acks import AckWaiter, WaitFor
from publisher.announcer import SOCKET_TIMEOUT_S, Announcer
from publisher.audience import audience, check_wait, nobody_to_answer, send_and_wait
from publisher.result import NotifyResult, Outcome, redis_unavailable
from publisher.travel import BlobStore, Transport, check_transport, travel, upload_target

__all__ = [
    "CheckpointNotifier",
    "NotifyOptions",
    "NotifyResult",
    "Outcome",
    "notify_checkpoint",
]

log = logging.getLogger(__name__)

BLOB_TIMEOUT_S = 10.0


class CheckpointNotifier(Announcer):
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
        url = redis_url or base.redis_url
        super().__init__(
            url,
            keys_for(instance_id or base.instance_id, url),
            secret=secret if secret is not None else base.secret,
            sharded=base.sharded_pubsub,
            client=client,
        )
        self.enabled = base.enable_checkpoint_notify if enabled is None else enabled
        self.upload_to = base.upload_to
        self.blob_keep = base.blob_keep
        self.blob_max_bytes = base.blob_max_bytes
        self._blob_client: LazyRedis | None = None

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
        check_wait(wait_for, timeout)
        check_transport(transport, upload_to)
        raw = os.fspath(model_path)
        remote = is_url(raw)
        path = raw if remote else os.path.abspath(raw)
        target = upload_target(path, remote, upload_to, transport, self.upload_to)
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
        try:
            heard = audience(draft, wait_for, self.nodes, self.keys.nodes)
        except REDIS_ERRORS as exc:
            return self._not_sent(path, redis_unavailable(exc), draft)
        if wait_for is not None and not heard.live:
            return nobody_to_answer(path, draft, heard, self.keys.nodes)
        if target is not None or transport == "redis":
            moved = self._travel(path, draft, target)
            if isinstance(moved, NotifyResult):
                return moved
            draft = moved
        return send_and_wait(
            lambda: self._send(path, draft, version),
            lambda: AckWaiter(self._redis(), self.keys, secret=self.secret),
            heard,
            wait_for,
            timeout,
            refuse=lambda why: self._not_sent(path, why, draft),
        )

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

    def close(self) -> None:
        super().close()
        if self._blob_client is not None:
            self._blob_client.close()


class NotifyOptions(TypedDict, total=False):
    """The keywords :func:`notify_checkpoint` takes besides ``instance_id`` and ``redis_url``,
    passed on to :meth:`CheckpointNotifier.notify` (which says what each one does), with
    their defaults: ``version=None`` (the next one is allocated), ``training_step=0``,
    ``metadata=None``, ``sha256=None`` (a readable file is hashed), ``force=False``,
    ``upload_to=None`` (``FKS_UPLOAD_TO``), ``transport="path"``, ``nodes=None`` (every node),
    ``wait_for=None`` (no waiting for acks), ``timeout=10.0``."""

    version: int | None
    training_step: int
    metadata: Mapping[str, object] | None
    sha256: str | None
    force: bool
    upload_to: str | None
    transport: Transport
    nodes: Sequence[str] | None
    wait_for: WaitFor | None
    timeout: float


def notify_checkpoint(
    model_path: str | os.PathLike[str],
    model_name: str = "",
    *,
    instance_id: str | None = None,
    redis_url: str | None = None,
    **options: Unpack[NotifyOptions],
) -> NotifyResult:
    """Announce a saved checkpoint once (SPEC §6, §9, §11), with a notifier of its own for
    ``instance_id`` on ``redis_url`` (defaults: ``FKS_INSTANCE_ID``, ``REDIS_URL``). Never
    raises because Redis (or the object store) is down. The other keywords are those of
    :meth:`CheckpointNotifier.notify`: ``version``, ``training_step``, ``metadata``,
    ``sha256``, ``force``; ``upload_to="s3://bucket/prefix/"`` uploads the file first and
    announces its URL; ``transport="redis"`` stores it as a Redis blob; ``nodes`` targets
    some nodes only; ``wait_for=N`` or ``"all"`` waits up to ``timeout`` s for their acks."""
    if unknown := sorted(set(options) - NotifyOptions.__optional_keys__):
        # notify's other keywords (saved_at, hash_file) are not part of this one-shot call
        raise TypeError(f"notify_checkpoint() got unexpected keyword arguments: {unknown}")
    with CheckpointNotifier(redis_url, instance_id) as notifier:
        return notifier.notify(model_path, model_name, **options)
