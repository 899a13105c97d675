"""What a node has already judged: catch-up duplicates and replayed signatures.

- :class:`JudgedMessages`: digests of the messages already judged (applied or skipped). A
  catch-up of ``:latest`` that holds one of them brings nothing new and is skipped, so a
  reconnect can never re-apply (or undo) a decision already taken.
- :class:`ReplayGuard` (with ``FKS_NOTIFY_SECRET``, SPEC §10): a node applies one signature
  at most once, and a ``force`` that matters (the message would not apply without it) needs
  an ``issued_at`` within ``FKS_FORCE_MAX_AGE_SECONDS`` of Redis' clock (as the node
  estimates it, ``common/redis_io/clock.py``; publishers stamp ``issued_at`` on it too, so neither
  machine's own clock decides). A captured, signed rollback can therefore not be replayed to
  undo newer checkpoints; a refusal for the window is ``issued_at_skew``, naming both times.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime

from common.notification import CheckpointNotification
from common.redis_io.clock import RedisClock

__all__ = ["JudgedMessages", "ReplayGuard"]


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str, mark: float = 0.0) -> None:
        with self._lock:
            self._items[key] = mark
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def marked(self, key: str) -> float:
        with self._lock:
            return self._items.get(key, 0.0)


class JudgedMessages(_Lru):
    """Digests (``message_digest``) of the messages judged by this node; one judged stale by
    its version alone is marked with when (:meth:`judged_stale_by_number`)."""

    def __init__(self, size: int = 1024) -> None:
        super().__init__(size)

    def judged_stale_by_number(self, digest: str) -> None:
        self.add(digest, time.monotonic())

    def stale_by_number(self, digest: str, *, since: float) -> bool:
        """Whether the message of ``digest`` was last judged stale for its version alone (a
        version at or below the served decision's) at or after ``since`` (monotonic). After
        Redis lost its data, that number may have been allocated again by a counter that
        restarted."""
        judged_at = self.marked(digest)
        return judged_at > 0.0 and judged_at >= since


class ReplayGuard:
    """Once-only signatures and fresh forced decisions, when messages are signed."""

    def __init__(
        self,
        *,
        enabled: bool,
        max_age_seconds: float,
        size: int = 16384,
        clock: RedisClock | None = None,
    ) -> None:
        self.enabled = enabled
        self.max_age = max_age_seconds
        self.clock = clock or RedisClock()
        self._signatures = _Lru(size)

    def replayed(self, notification: CheckpointNotification) -> str | None:
        """Why ``notification`` is a replay of a signature already judged, or None."""
        sig = notification.signature
        if self.enabled and sig is not None and sig in self._signatures:
            return "this signature was already judged once (a replayed message)"
        return None

    def judged(self, notification: CheckpointNotification) -> None:
        if self.enabled and notification.signature is not None:
            self._signatures.add(notification.signature)

    def refuse_force(
        self, notification: CheckpointNotification, now: datetime | None = None
    ) -> tuple[str, str] | None:
        """Why a forced decision that matters is refused, as (reason, detail): ``replayed``
        when its ``issued_at`` is missing, ``issued_at_skew`` when it lies outside the window;
        or None. Once-only signatures are checked on arrival."""
        if not self.enabled:
            return None
        issued = notification.issued_at
        if issued is None:
            return "replayed", "a forced message must carry issued_at when messages are signed"
        now = now or self.clock.now_datetime()
        age = abs((now - issued).total_seconds())
        if age > self.max_age:
            clock = "Redis' clock" if self.clock.measured else "this node's clock"
            return "issued_at_skew", (
                f"forced message issued at {issued.isoformat()}, {age:.0f} s from {clock} "
                f"({now.isoformat(timespec='seconds')}), over "
                f"FKS_FORCE_MAX_AGE_SECONDS={self.max_age:g}: an old message replayed, or a "
                "publisher whose clock is off"
            )
        return None
