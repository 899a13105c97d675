"""The staleness rule of SPEC §2, as one pure function.

A notification is applied only if it is newer than what is served:

- ``force: true`` is always applied (verification still runs afterwards);
- both versioned (``version > 0``): applied iff ``version > served.version``;
- otherwise: applied iff the file differs from the served one by path or mtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Freshness", "ServedIdentity", "judge"]


class Freshness(StrEnum):
    """Why a notification is applied (``NO_MODEL`` … ``FILE_CHANGED``) or skipped."""

    NO_MODEL = "no_model"
    FORCED = "forced"
    NEWER_VERSION = "newer_version"
    FILE_CHANGED = "file_changed"
    STALE_VERSION = "stale_version"
    SAME_FILE = "same_file"

    @property
    def apply(self) -> bool:
        return self in _APPLY


_APPLY = frozenset(
    {Freshness.NO_MODEL, Freshness.FORCED, Freshness.NEWER_VERSION, Freshness.FILE_CHANGED}
)


@dataclass(frozen=True, slots=True)
class ServedIdentity:
    """What identifies the served checkpoint for the staleness rule."""

    path: str
    mtime_ns: int
    version: int


def judge(
    served: ServedIdentity | None,
    *,
    path: str,
    version: int,
    force: bool = False,
    mtime_ns: int | None = None,
) -> Freshness:
    """Decide whether a candidate (``path``, ``version``, file ``mtime_ns``) should replace
    ``served``. ``path`` must be resolved the same way as ``served.path``; ``mtime_ns`` is
    ``None`` when the file could not be stat-ed (it then counts as changed, and the load that
    follows reports the real error)."""
    if served is None:
        return Freshness.NO_MODEL
    if force:
        return Freshness.FORCED
    if version > 0 and served.version > 0:
        return Freshness.NEWER_VERSION if version > served.version else Freshness.STALE_VERSION
    if path != served.path or mtime_ns != served.mtime_ns:
        return Freshness.FILE_CHANGED
    return Freshness.SAME_FILE
