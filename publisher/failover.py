"""A notification across a failover (SPEC §10): one retry, outcomes kept honest.

When the master is lost (the connection gone, ``READONLY`` from a demoted master, a cluster
slot moving) the notifier finds the master anew and tries **once** more, so the bound is
twice the client's timeouts. A first try that may have published (its reply was lost) is
retried with the same message under the same version (the publish script moves nothing the
second time, and a node judges a repeated message once), and the result never says
``not_sent`` when something may have reached Redis. A timeout is not a failover: a slow
Redis is not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError

from common.notification import CheckpointNotification
from common.textsafe import printable
from publisher.result import NotifyResult

__all__ = ["Failover", "failing_over", "script_error", "send_with_one_retry"]

log = logging.getLogger("publisher.notifier")

# One try: (draft, allocate a version?) -> the result, or Failover.
Attempt = Callable[[CheckpointNotification, bool], NotifyResult]


class Failover(Exception):
    """The master was lost: worth one retry on the new master; ``result`` is what to return
    if that fails too."""

    def __init__(self, result: NotifyResult) -> None:
        super().__init__(result.reason)
        self.result = result


def failing_over(exc: BaseException) -> bool:
    """Errors of a master going away (not a timeout: a slow Redis is not retried)."""
    if isinstance(exc, redis.TimeoutError):
        return False
    return isinstance(
        exc, redis.ConnectionError | RedisClusterException | ClusterDownError | TryAgainError
    )


def script_error(exc: redis.ResponseError, sharded: bool) -> str:
    """The reason to give for an error the publish script answered."""
    text = str(exc)
    if sharded and "SPUBLISH" in text.upper():
        return (
            f"sharded_pubsub_unsupported: FKS_SHARDED_PUBSUB=true needs Redis >= 7 (SPUBLISH); "
            f"this server answered: {text}"
        )
    return f"script_error: {text}"


def send_with_one_retry(
    attempt: Attempt,
    draft: CheckpointNotification,
    *,
    allocate: bool,
    before_retry: Callable[[], None],
    report: Callable[[NotifyResult], NotifyResult],
    where: str,
) -> NotifyResult:
    """Run ``attempt``; after a :class:`Failover`, call ``before_retry`` (find the master
    anew) and run it once more. A result the attempts did not log themselves (a try given
    up, a lost first try) goes through ``report``, which logs it and returns it."""
    sent: NotifyResult | None = None  # a first try that may have published
    for try_number in (1, 2):
        try:
            result = attempt(draft, allocate)
        except Failover as failover:
            if failover.result.outcome == "unknown":
                sent = failover.result
                if failover.result.notification is not None:
                    # the same message again, under the version it may already carry
                    draft, allocate = failover.result.notification, False
            if try_number == 2:
                # not_sent only if neither try may have reached Redis
                return report(sent or failover.result)
            log.info(
                "Redis at %s failed over (%s); finding the master and trying once more",
                where,
                printable(failover.result.reason),
            )
            before_retry()
            continue
        if sent is not None and result.outcome == "not_sent":
            return report(sent)  # the retry sent nothing, but the first try may have
        return result
    raise AssertionError("unreachable")  # pragma: no cover
