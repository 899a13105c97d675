"""The trainer's side: announce a saved checkpoint on Redis (SPEC §2, §3, §6).

One notification is one round trip of a Lua script that PUBLISHes the message and moves
``:latest`` to it unless ``:latest`` already holds a newer version, so subscribers that were
away catch up on exactly what was announced. A missing version is allocated with ``INCR``
first. Redis being down is never an exception for the trainer: the checkpoint is already on
disk, so :meth:`CheckpointNotifier.notify` returns a :class:`NotifyResult` saying why nothing
was sent, within the client's 1 s connect/read timeouts and with no retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.checkpoint import file_sha256
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.settings import Settings, redact_url

__all__ = ["CheckpointNotifier", "NotifyResult", "notify_checkpoint"]

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 1.0

# KEYS[1] = :latest, KEYS[2] = :version; ARGV[1] = channel, ARGV[2] = message, ARGV[3] = version
# Returns {receivers, latest_updated}. Versions above 2^53 compare as doubles (Lua numbers).
PUBLISH_SCRIPT = """
local version = tonumber(ARGV[3])
local update = 1
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  local held = 0
  if ok and type(decoded) == 'table' then held = tonumber(decoded['version']) or 0 end
  if held > 0 and (version == 0 or version < held) then update = 0 end
end
if update == 1 then redis.call('SET', KEYS[1], ARGV[2]) end
if version > 0 then
  local counter = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if counter < version then redis.call('SET', KEYS[2], ARGV[3]) end
end
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
return {receivers, update}
"""


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What :func:`notify_checkpoint` did.

    ``sent`` is true when the message was published (``receivers`` subscribers got it, which
    may be 0); otherwise ``reason`` says why not (``"disabled"``, ``"redis_unavailable: …"``).
    """

    sent: bool
    reason: str
    notification: CheckpointNotification | None = None
    receivers: int = 0
    latest_updated: bool = False

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
        self._script = self._client.register_script(PUBLISH_SCRIPT)

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

        ``version=None`` allocates the next one with ``INCR``; ``sha256=None`` hashes the file
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
        }
        if saved_at is not None:
            fields["saved_at"] = saved_at
        draft = CheckpointNotification.model_validate(fields, strict=False)
        if not self.enabled:
            log.info("checkpoint notify disabled (ENABLE_CHECKPOINT_NOTIFY=false): %s", path)
            return NotifyResult(False, "disabled", draft)
        try:
            if version is None:
                draft = draft.model_copy(
                    update={"version": int(self._client.incr(self.keys.version))}
                )
            message = draft.signed(self.secret) if self.secret else draft
            receivers, updated = self._script(
                keys=[self.keys.latest, self.keys.version],
                args=[self.keys.channel, message.to_json(), str(message.version)],
            )
        except (redis.RedisError, OSError) as exc:
            why = f"redis_unavailable: {type(exc).__name__}: {exc}"
            log.warning(
                "checkpoint %s saved but not announced (%s at %s)",
                path,
                why,
                redact_url(self.redis_url),
            )
            return NotifyResult(False, why, draft)
        log.info(
            "announced %s version %d on %s to %d receiver(s)%s",
            path,
            message.version,
            self.keys.channel,
            receivers,
            "" if updated else " (:latest holds a newer version)",
        )
        return NotifyResult(True, "published", message, int(receivers), bool(updated))

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
