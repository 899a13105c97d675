"""Waiting for the nodes' acks of one notification (SPEC §11).

:class:`AckWaiter` subscribes to ``fks:{instance}:acks`` *before* the notification is
published (an ack cannot be missed, however fast a node is), then collects the acks that
answer that message (same version, sha256 and model_path) until the wait is satisfied or the
timeout passes:

- ``wait_for="all"``: every node that was live in the registry when the message was sent has
  acked (a node outside a targeted message acks ``ignored``; it counts as having answered);
- ``wait_for=N``: N nodes have judged it (``applied``, ``rejected`` or ``stale``; ``ignored``
  does not count).

The :class:`AckReport` lists each node's first ack and the nodes that stayed silent. Acks are
parsed strictly (``common/ack.py``); anything else on the channel is skipped, and so is, when
the publisher holds ``FKS_NOTIFY_SECRET``, any ack not signed with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import redis

from common.ack import Ack
from common.keys import RedisKeys
from common.redis_connect import REDIS_ERRORS, RedisClient

__all__ = ["AckReport", "AckWaiter", "WaitFor"]

WaitFor = int | Literal["all"]


@dataclass(frozen=True, slots=True)
class AckReport:
    """What the nodes said about one notification.

    ``expected``: the nodes waited for (live when it was sent; with ``nodes`` and an int
    ``wait_for``, the targeted ones among them); ``acks``: the first ack of every node that
    answered, in arrival order; ``silent``: expected nodes that did not answer in time (for
    an int ``wait_for`` only when fewer than N answered); ``complete``: the wait was satisfied;
    ``seconds``: from publishing to the last ack awaited (or the timeout).
    """

    wait_for: WaitFor
    expected: tuple[str, ...]
    acks: tuple[Ack, ...]
    silent: tuple[str, ...]
    complete: bool
    seconds: float

    @property
    def rejected(self) -> tuple[Ack, ...]:
        return tuple(a for a in self.acks if a.outcome == "rejected")

    @property
    def applied(self) -> tuple[Ack, ...]:
        return tuple(a for a in self.acks if a.outcome == "applied")

    @property
    def ok(self) -> bool:
        """Complete, nobody rejected, nobody silent."""
        return self.complete and not self.rejected and not self.silent

    def ack_of(self, node: str) -> Ack | None:
        return next((a for a in self.acks if a.node == node), None)


class AckWaiter:
    """``with AckWaiter(client, keys) as waiter:`` publish, then ``waiter.collect(...)``."""

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys,
        *,
        secret: str | None = None,
        confirm_timeout: float = 2.0,
    ):
        self.keys = keys
        self.secret = secret
        self._pubsub = client.pubsub()
        self._confirm_timeout = confirm_timeout

    def __enter__(self) -> AckWaiter:
        self._pubsub.subscribe(self.keys.acks)
        deadline = time.monotonic() + self._confirm_timeout
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "subscribe":
                return self
        self.close()
        raise redis.TimeoutError(f"no SUBSCRIBE confirmation for {self.keys.acks}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._pubsub.close()
        except REDIS_ERRORS:
            pass

    def collect(
        self,
        *,
        version: int,
        sha256: str | None,
        model_path: str,
        wait_for: WaitFor,
        expected: tuple[str, ...],
        timeout: float,
        sent_at: float | None = None,
    ) -> AckReport:
        """Acks of the message (``version``, ``sha256``, ``model_path``) until ``wait_for``
        is met or ``timeout`` seconds pass (Redis errors end the wait early: the report says
        who answered until then). ``sent_at`` (``time.monotonic()`` just before publishing)
        is where the report's ``seconds`` start."""
        start = time.monotonic() if sent_at is None else sent_at
        deadline = time.monotonic() + timeout
        acks: dict[str, Ack] = {}

        def done() -> bool:
            if wait_for == "all":
                return all(node in acks for node in expected)
            judged = sum(1 for a in acks.values() if a.outcome != "ignored")
            return judged >= wait_for

        try:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                message = self._pubsub.get_message(timeout=min(left, 0.2))
                if message is None or message["type"] != "message":
                    continue
                ack = Ack.parse(message["data"], secret=self.secret)
                if ack is None or not ack.answers(version, sha256, model_path):
                    continue
                acks.setdefault(ack.node, ack)
        except REDIS_ERRORS:
            pass
        complete = done()
        silent = (
            () if complete and wait_for != "all" else tuple(n for n in expected if n not in acks)
        )
        return AckReport(
            wait_for=wait_for,
            expected=expected,
            acks=tuple(acks.values()),
            silent=silent,
            complete=complete,
            seconds=time.monotonic() - start,
        )
