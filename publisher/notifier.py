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
``disabled``, within the client's 1 s connect/read timeouts and with no retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.checkpoint import file_sha256
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_scripts import ALLOCATE, PUBLISH
from common.settings import Settings, redact_url
from common.textsafe import printable

__all__ = ["CheckpointNotifier", "NotifyResult", "Outcome", "notify_checkpoint"]

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 1.0

Outcome = Literal["published", "not_sent", "unknown", "conflict", "disabled"]


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What :func:`notify_checkpoint` did.

    ``outcome`` is ``published`` (``receivers`` subscribers got it, which may be 0),
    ``not_sent`` (nothing reached Redis), ``unknown`` (sent, but Redis did not confirm: it
    may be published when Redis answers again), ``conflict`` (the version already names
    another checkpoint; nothing published) or ``disabled``. ``sent`` is true only for
    ``published``; ``reason`` says why not.
    """

    sent: bool
    reason: str
    notification: CheckpointNotification | None = None
    receivers: int = 0
    latest_updated: bool = False
    outcome: Outcome = "published"

    def __bool__(self) -> bool:
        return self.sent


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
        client: redis.Redis | None = None,
    ) -> None:
        base = settings or Settings()
        self.redis_url = redis_url or base.redis_url
        self.keys = RedisKeys(instance_id or base.instance_id)
        self.secret = secret if secret is not None else base.secret
        self.enabled = base.enable_checkpoint_notify if enabled is None else enabled
        self._own_client = client is None
        self._client = client or redis.Redis.from_url(
            self.redis_url,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=False,
        )
        self._allocate = self._client.register_script(ALLOCATE)
        self._publish = self._client.register_script(PUBLISH)
        self._floor = 0  # the highest version this notifier published

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
    ) -> NotifyResult:
        """Publish one notification for ``model_path`` (made absolute).

        ``version=None`` allocates the next one (above ``:version``, ``:latest`` and what this
        notifier published before); ``sha256=None`` hashes the file
        when it is readable here (``hash_file=False`` skips that). Invalid arguments raise
        ``ValueError``; an unreachable Redis does not raise.
        """
        path = os.path.abspath(os.fspath(model_path))
        if sha256 is None and hash_file and os.path.isfile(path):
            sha256 = file_sha256(path)
        fields: dict[str, Any] = {
            "model_path": path,
            "model_name": model_name,
            "version": 0 if version is None else version,
            "training_step": training_step,
            "metadata": dict(metadata or {}),
            "sha256": sha256,
            "force": force,
            "issued_at": datetime.now(UTC),
        }
        if saved_at is not None:
            fields["saved_at"] = saved_at
        draft = CheckpointNotification.model_validate(fields, strict=False)
        if not self.enabled:
            log.info("checkpoint notify disabled (ENABLE_CHECKPOINT_NOTIFY=false): %s", path)
            return NotifyResult(False, "disabled", draft, outcome="disabled")
        try:
            if version is None:
                allocated = self._allocate(
                    keys=[self.keys.version, self.keys.latest], args=[str(self._floor)]
                )
                draft = draft.model_copy(update={"version": int(allocated)})
            else:
                self._client.ping()  # nothing of ours is sent until Redis has answered once
        except redis.ResponseError as exc:
            return self._not_sent(path, f"version_unavailable: {exc}", draft)
        except (redis.RedisError, OSError) as exc:
            return self._not_sent(path, f"redis_unavailable: {type(exc).__name__}: {exc}", draft)
        message = draft.signed(self.secret) if self.secret else draft
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
                    "1" if version is None else "0",
                ],
            )
        except redis.ResponseError as exc:
            return self._not_sent(path, f"script_error: {exc}", draft)
        except (redis.RedisError, OSError) as exc:
            why = f"unconfirmed: {type(exc).__name__}: {exc}"
            log.warning(
                "checkpoint %s version %d sent but not confirmed (%s at %s): it may still be "
                "published",
                printable(path),
                message.version,
                why,
                redact_url(self.redis_url),
            )
            return NotifyResult(False, why, message, outcome="unknown")
        status = status.decode() if isinstance(status, bytes) else str(status)
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

    def _not_sent(self, path: str, why: str, draft: CheckpointNotification) -> NotifyResult:
        log.warning(
            "checkpoint %s saved but not announced (%s at %s)",
            printable(path),
            why,
            redact_url(self.redis_url),
        )
        return NotifyResult(False, why, draft, outcome="not_sent")

    def current_version(self) -> int | None:
        """The ``:version`` counter (the newest version allocated), or None if unreachable."""
        try:
            raw = self._client.get(self.keys.version)
        except (redis.RedisError, OSError):
            return None
        return int(raw) if raw is not None else 0

    def close(self) -> None:
        if self._own_client:
            self._client.close()

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
) -> NotifyResult:
    """Announce a saved checkpoint once (SPEC §6). Never raises because Redis is down."""
    with CheckpointNotifier(redis_url, instance_id) as notifier:
        return notifier.notify(
            Path(model_path),
            model_name,
            version=version,
            training_step=training_step,
            metadata=metadata,
            sha256=sha256,
            force=force,
        )
