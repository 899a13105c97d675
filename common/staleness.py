"""The staleness rule of SPEC §2, as one pure function.

A notification is applied only if it is newer than what is served:

- ``force: true`` is always applied (verification still runs afterwards);
- a versioned message (``version > 0``) is applied iff its version is above the served
  decision's: its version, or, for an unversioned decision (a bare message, a file found on
  disk, a reload), the highest version the node knew when it took it (``watermark``), so a
  version issued after that decision is newer and one issued before it is stale. Both
  versioned, this is SPEC §2's ``version > served.version``;
- an unversioned message: the files decide. The served file rewritten (same path, another
  mtime) is newer; another file is newer unless it is older than the served decision: its
  mtime must be at least ``served.newer_after_ns`` (the moment the served decision was
  taken: a message's arrival, a rollback, a reload; for a file found on disk, its mtime).
  File system clocks tick coarsely, so an equal mtime counts as newer.

The refinement of "the file differs" to "the file is not older" keeps an unversioned message
naming an old file (a late duplicate, or a catch-up of a ``:latest`` older than what the
fallback served meanwhile) from undoing a newer decision; the mtime fallback uses the very
same rule for the files it finds on disk.
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
    OLDER_FILE = "older_file"

    @property
    def apply(self) -> bool:
        return self in _APPLY


_APPLY = frozenset(
    {Freshness.NO_MODEL, Freshness.FORCED, Freshness.NEWER_VERSION, Freshness.FILE_CHANGED}
)


@dataclass(frozen=True, slots=True)
class ServedIdentity:
    """What identifies the served decision for the staleness rule.

    ``newer_after_ns``: another file counts as newer only from this mtime on (``None``: the
    served file's own mtime). ``watermark``: the highest version known when the decision was
    taken (only matters for an unversioned one). ``sha256``: the served bytes (an unversioned
    remote checkpoint is newer iff its sha256 differs, ``subscriber/model/plan.py``).
    """

    path: str
    mtime_ns: int
    version: int
    newer_after_ns: int | None = None
    watermark: int = 0
    sha256: str | None = None

    @property
    def threshold_ns(self) -> int:
        return self.mtime_ns if self.newer_after_ns is None else self.newer_after_ns

    @property
    def version_floor(self) -> int:
        """A versioned message must be above this to be newer."""
        return max(self.version, self.watermark)


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
    if version > 0:
        newer = version > served.version_floor
        return Freshness.NEWER_VERSION if newer else Freshness.STALE_VERSION
    if path == served.path:
        return Freshness.SAME_FILE if mtime_ns == served.mtime_ns else Freshness.FILE_CHANGED
    if mtime_ns is None or mtime_ns >= served.threshold_ns:
        return Freshness.FILE_CHANGED
    return Freshness.OLDER_FILE
