"""Who a notification is for and who must answer it (SPEC §11): ``nodes=[...]`` targets some
nodes only (the others ack ``ignored``; ``:latest`` does not move, so a canary never spreads
by catch-up); ``wait_for=N`` or ``"all"`` waits up to ``timeout`` seconds for the nodes' acks,
subscribed before publishing (``publisher/acks.py``), and returns them in
``NotifyResult.acks``. Waiting with no live node in the registry sends nothing (``not_sent``,
"no live nodes"); ids in ``nodes`` that no live node has are warned about by name
(``NotifyResult.unknown_nodes``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from common.ack import answer_digest
from common.fleet import NodeEntry
from common.notification import CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS
from common.textsafe import printable
from publisher.acks import AckWaiter, WaitFor
from publisher.result import NotifyResult, redis_unavailable

__all__ = ["Audience", "audience", "check_wait", "nobody_to_answer", "send_and_wait"]

log = logging.getLogger("publisher.notifier")


def check_wait(wait_for: WaitFor | None, timeout: float) -> None:
    """``ValueError`` for a ``wait_for`` that is not an int >= 1 or ``"all"``, or a
    ``timeout`` that is not positive."""
    if wait_for is not None and wait_for != "all":
        if isinstance(wait_for, bool) or not isinstance(wait_for, int) or wait_for < 1:
            raise ValueError(f"wait_for must be an int >= 1 or 'all', got {wait_for!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")


@dataclass(frozen=True, slots=True)
class Audience:
    """The live nodes' ids (read only when waiting or targeting) and the targeted ids that
    no live node has."""

    live: tuple[str, ...]
    unknown: tuple[str, ...]


def audience(
    draft: CheckpointNotification,
    wait_for: WaitFor | None,
    nodes: Callable[[], list[NodeEntry]],
    registry: str,
) -> Audience:
    """Who hears ``draft``: the registry read through ``nodes`` when waiting or targeting
    (Redis errors propagate); targeted ids that no live node has are warned about."""
    live: list[str] = []
    if wait_for is not None or draft.nodes is not None:
        live = [row.node_id for row in nodes() if row.live]
    unknown = tuple(n for n in draft.nodes or () if n not in live)
    if unknown:
        log.warning(
            "nodes %s are unknown or not live in %s: they will not hear this message",
            ", ".join(unknown),
            registry,
        )
    return Audience(tuple(live), unknown)


def nobody_to_answer(
    path: str, draft: CheckpointNotification, heard: Audience, registry: str
) -> NotifyResult:
    """A wait with no live node to answer it: nothing is sent (logged once, not raised)."""
    why = f"no live nodes in {registry}: nothing sent, nobody would answer"
    log.warning("checkpoint %s not announced: %s", printable(path), why)
    return NotifyResult(False, why, draft, outcome="not_sent", unknown_nodes=heard.unknown)


def send_and_wait(
    send: Callable[[], NotifyResult],
    waiter: Callable[[], AckWaiter],
    heard: Audience,
    wait_for: WaitFor | None,
    timeout: float,
    refuse: Callable[[str], NotifyResult],
) -> NotifyResult:
    """``send()``; with ``wait_for``, subscribed to the acks first (a subscription Redis
    refuses is ``refuse``'d: nothing is sent), then the acks of the nodes expected to judge
    the message sent collected for up to ``timeout`` seconds from the send."""
    with contextlib.ExitStack() as stack:
        try:
            acks = stack.enter_context(waiter()) if wait_for is not None else None
        except REDIS_ERRORS as exc:
            return refuse(redis_unavailable(exc))
        sent_at = time.monotonic()
        result = send()
        if acks is None or not result.sent or result.notification is None:
            return replace(result, unknown_nodes=heard.unknown)
        assert wait_for is not None
        sent = result.notification
        expected = tuple(n for n in heard.live if wait_for == "all" or sent.targets(n))
        report = acks.collect(
            answers=answer_digest(sent.to_json()),
            wait_for=wait_for,
            expected=expected,
            timeout=timeout,
            sent_at=sent_at,
        )
        return replace(result, acks=report, unknown_nodes=heard.unknown)
