"""Waiting for the nodes' acks of one notification (SPEC §11).

:class:`AckWaiter` subscribes to ``fks:{instance}:acks`` *before* the notification is
published (an ack cannot be missed, however fast a node is), then collects the acks that
answer that very message (their ``answers`` is the sha256 of the bytes published: a recorded
ack replayed when the same version, sha256 and path are announced again answers another
message and is ignored) until the wait is satisfied or the timeout passes:

- ``wait_for="all"``: every node that was live in the registry when the message was sent has
  acked (a node outside a targeted message acks ``ignored``; it counts as having answered);
- ``wait_for=N``: N nodes have judged it (``applied``, ``rejected`` or ``stale``; ``ignored``
  does not count).

A wait whose connection is cut (a ``CLIENT KILL``, a restart) subscribes again within the
timeout and reads back, from the nodes' registry entries (each keeps its last acks, signed
with the entry), the acks sent while it was away; the report counts the cuts (``cuts``).
The :class:`AckReport` lists each node's first ack and the nodes that stayed silent. Acks are
parsed strictly (``common/ack.py``); anything else on the channel is skipped, and so is, when
the publisher holds ``FKS_NOTIFY_SECRET``, any ack not signed with it.
"""

from __future__ import annotations

import json
import time
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal, Self

import redis
from redis.client import PubSub

from common.ack import Ack
from common.closing import Closing
from common.fleet import read_nodes
from common.keys import RedisKeys
from common.redis_io.connect import REDIS_ERRORS, RedisClient

__all__ = ["AckReport", "AckWaiter", "WaitFor"]

WaitFor = int | Literal["all"]


@dataclass(frozen=True, slots=True)
class AckReport:
    """What the nodes said about one notification.

    ``expected``: the nodes waited for (live when it was sent; with ``nodes`` and an int
    ``wait_for``, the targeted ones among them); ``acks``: the first ack of every node that
    answered, in arrival order; ``silent``: expected nodes that did not answer in time (for
    an int ``wait_for`` only when fewer than N answered); ``complete``: the wait was satisfied;
    ``seconds``: from publishing to the last ack awaited (or the timeout); ``cuts``: how
    often the connection was lost and the wait resumed (acks sent meanwhile read back from
    the registry); ``cut``: the last cut could not be mended in time (the silent nodes may
    have answered unheard).
    """

    wait_for: WaitFor
    expected: tuple[str, ...]
    acks: tuple[Ack, ...]
    silent: tuple[str, ...]
    complete: bool
    seconds: float
    cuts: int = 0
    cut: bool = False

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


@dataclass(eq=False, repr=False)  # compared by identity; no secret in a repr
class AckWaiter(Closing):
    """``with AckWaiter(client, keys) as waiter:`` publish, then ``waiter.collect(...)``."""

    client: RedisClient
    keys: RedisKeys
    _: KW_ONLY
    secret: str | None = None
    confirm_timeout: float = 2.0
    _pubsub: PubSub | None = field(default=None, init=False)

    def __enter__(self) -> Self:
        self._subscribe(time.monotonic() + self.confirm_timeout)
        return self

    def _subscribe(self, deadline: float) -> None:
        """A fresh subscription, confirmed before ``deadline`` (redis errors propagate)."""
        self.close()
        pubsub = self.client.pubsub()
        self._pubsub = pubsub
        pubsub.subscribe(self.keys.acks)
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "subscribe":
                return
        self.close()
        raise redis.TimeoutError(f"no SUBSCRIBE confirmation for {self.keys.acks}")

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except REDIS_ERRORS:
                pass

    def collect(
        self,
        *,
        answers: str,
        wait_for: WaitFor,
        expected: tuple[str, ...],
        timeout: float,
        sent_at: float | None = None,
    ) -> AckReport:
        """Acks of the message whose bytes hash to ``answers`` until ``wait_for`` is met or
        ``timeout`` seconds pass. A lost connection is subscribed again (and what was missed
        read back from the registry) within the timeout. ``sent_at`` (``time.monotonic()``
        just before publishing) is where the report's ``seconds`` start."""
        start = time.monotonic() if sent_at is None else sent_at
        deadline = time.monotonic() + timeout
        acks: dict[str, Ack] = {}
        cuts, cut = 0, False

        def done() -> bool:
            if wait_for == "all":
                return all(node in acks for node in expected)
            judged = sum(1 for a in acks.values() if a.outcome != "ignored")
            return judged >= wait_for

        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                if cut:
                    self._subscribe(deadline)
                    cut = False
                    self._read_back(answers, expected, acks)
                    continue
                assert self._pubsub is not None
                message = self._pubsub.get_message(timeout=min(left, 0.2))
            except REDIS_ERRORS:
                if not cut:
                    cuts += 1
                cut = True
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if message is None or message["type"] != "message":
                continue
            ack = Ack.parse(message["data"], secret=self.secret)
            if ack is None or not ack.judges(answers):
                continue
            acks.setdefault(ack.node, ack)
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
            cuts=cuts,
            cut=cut and not complete,
        )

    def _read_back(self, answers: str, expected: tuple[str, ...], acks: dict[str, Ack]) -> None:
        """The acks of ``answers`` that expected nodes sent while the wait was cut, from
        their registry entries (believed only when the entry is, ``common/fleet.py``)."""
        for row in read_nodes(self.client, self.keys, secret=self.secret):
            if row.node_id not in expected or row.node_id in acks or row.distrust:
                continue
            recent = row.entry.get("acks")
            for item in recent if isinstance(recent, list) else ():
                try:
                    ack = Ack.model_validate_json(json.dumps(item))
                except ValueError:
                    continue
                if ack.node == row.node_id and ack.judges(answers):
                    acks.setdefault(ack.node, ack)
                    break
