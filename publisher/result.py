"""What one notification did (:class:`NotifyResult`), and how a notification that was not
published is reported: logged once with its reason, never raised (Redis being down is not
an exception for the trainer: the checkpoint is already on disk)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from common.notification import CheckpointNotification
from common.remote import is_url
from common.settings import redact_url
from common.textsafe import printable
from publisher.acks import AckReport

__all__ = ["NotifyResult", "Outcome", "not_sent", "redis_unavailable", "unconfirmed"]

log = logging.getLogger("publisher.notifier")

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
    acks: AckReport | None = None
    unknown_nodes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.sent


def redis_unavailable(exc: BaseException) -> str:
    """The reason given when Redis did not answer: ``redis_unavailable: <type>: <error>``."""
    return f"redis_unavailable: {type(exc).__name__}: {exc}"


def not_sent(path: str, why: str, draft: CheckpointNotification, redis_url: str) -> NotifyResult:
    """Log that ``path`` was not announced (and whether it exists here); the result."""
    if is_url(path) or os.path.exists(path):
        log.warning(
            "checkpoint %s saved but not announced (%s at %s)",
            printable(path),
            why,
            redact_url(redis_url),
        )
    else:
        log.warning(
            "checkpoint %s not announced (%s at %s); it does not exist on this machine "
            "(it may still exist on the serving nodes)",
            printable(path),
            why,
            redact_url(redis_url),
        )
    return NotifyResult(False, why, draft, outcome="not_sent")


def unconfirmed(path: str, result: NotifyResult, redis_url: str) -> NotifyResult:
    """Log a notification sent but not confirmed (``unknown``); return it."""
    assert result.notification is not None
    log.warning(
        "checkpoint %s version %d sent but not confirmed (%s at %s): it may still be published",
        printable(path),
        result.notification.version,
        result.reason,
        redact_url(redis_url),
    )
    return result
