"""A bounded log of what the holder did and why (swaps, skips, rejections, failed loads)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["Event", "EventKind", "EventLog"]


class EventKind(StrEnum):
    SWAP = "swap"
    STALE = "stale"
    REJECTED = "rejected"
    LOAD_FAILED = "load_failed"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    reason: str
    source: str
    path: str | None = None
    version: int = 0
    generation: int | None = None
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["kind"] = str(self.kind)
        out["at"] = self.at.isoformat()
        return out


class EventLog:
    """Newest first, at most ``maxlen`` entries; safe to append from any thread."""

    def __init__(self, maxlen: int = 256) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, event: Event) -> Event:
        with self._lock:
            self._events.appendleft(event)
        return event

    def recent(self, limit: int | None = None) -> list[Event]:
        with self._lock:
            items = list(self._events)
        return items if limit is None else items[:limit]
