"""Which of a batch of candidates is the latest decision: the one ordering rule, pure.

Notifications that arrive while a load runs pile up; when the applier takes them, it does
not keep "the last one that arrived" (a late no-op would drop a newer decision) but replays
the batch in arrival order through the staleness rule (``common/staleness.py``), each
candidate judged against the state the previous applicable ones would have left:

- a candidate that would apply becomes the new virtual state, from the moment it was decided:
  files older than that decision are not newer than it (a message may name an older file:
  a rollback, a file announced again under a new version);
- one that would not is skipped with its reason (stale version, same file, older file,
  known bad, replayed force);

and only the last applicable candidate is loaded. If its load fails, the one before it is
tried, and so on: exactly what applying them one by one would have served, for one load.
Versions 1 … ``skip_through`` need ``force`` after a rollback (``holder.py``), and so does a
versioned message that was in flight when the rollback happened (received before it).

A remote checkpoint (SPEC §9) has no file, hence no mtime, before it is fetched: a versioned
or forced one is judged as any message; an unversioned one is newer iff its sha256 differs
from the served model's (a decision taken when it arrives). An object of the remote tier
(``STAT_PAIR_RL_URL``) has its listing's size and modification time, and is judged as a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.checkpoint.file import FileIdentity
from common.errors import CheckpointError
from common.notification import CheckpointNotification
from common.remote import RemoteRef
from common.staleness import Freshness, ServedIdentity, judge

__all__ = ["Candidate", "Located", "Plan", "Step", "judge_candidate", "judge_located", "plan"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """Something that may become the served decision: a message, or a file found on disk."""

    source: str  # channel | latest | disk | mtime | remote
    path: str
    version: int = 0
    force: bool = False
    sha256: str | None = None
    notification: CheckpointNotification | None = None
    raw: bytes | None = None  # the message's bytes: recorded in :latest, restored after loss
    latest_before: str = ""  # sha1 of what :latest held before this message ('' = nothing)
    received_at: float = field(default_factory=time.monotonic)
    # Wall clock of the decision: a live message's arrival, a catch-up's issued_at, a
    # reload's request; 0 for a file found on disk (its mtime is its decision time).
    decided_ns: int = field(default_factory=time.time_ns)
    # The highest version the node knew when this candidate arrived (an unversioned one is
    # newer than versions up to it, older than versions issued after it).
    watermark: int = 0
    first_received_at: float | None = None  # for retries of a missing file

    @property
    def targeted(self) -> bool:
        """A message for some nodes only (SPEC §11): never recorded into ``:latest``."""
        return self.notification is not None and self.notification.nodes is not None

    @classmethod
    def from_notification(
        cls,
        notification: CheckpointNotification,
        source: str,
        *,
        raw: bytes | None = None,
        latest_before: str = "",
        received_at: float | None = None,
        decided_ns: int | None = None,
        watermark: int = 0,
    ) -> Candidate:
        return cls(
            source=source,
            path=notification.model_path,
            version=notification.version,
            force=notification.force,
            sha256=notification.sha256,
            notification=notification,
            raw=raw,
            latest_before=latest_before,
            received_at=time.monotonic() if received_at is None else received_at,
            decided_ns=time.time_ns() if decided_ns is None else decided_ns,
            watermark=watermark,
        )


@dataclass(frozen=True, slots=True)
class Located:
    """A candidate with its real path and file identity (or why it has none); a remote
    candidate has ``remote`` instead of a path (and the identity its listing gave, if any)."""

    candidate: Candidate
    real: Path | None
    identity: FileIdentity | None
    error: CheckpointError | None = None
    remote: RemoteRef | None = None

    @property
    def mtime_ns(self) -> int | None:
        return self.identity.mtime_ns if self.identity else None

    @property
    def key(self) -> str:
        """What names this candidate for the staleness rule: its real path, or its URL."""
        if self.remote is not None:
            return self.remote.url
        return str(self.real) if self.real is not None else self.candidate.path

    def identity_after(self, before: ServedIdentity | None = None) -> ServedIdentity:
        """The served identity if this candidate were applied over ``before``: files of
        another path must be at least as new as the decision (a message's file may be older
        than the message); an unversioned decision stands against every version applied
        before it (``before``'s floor), not only those the node had applied when it arrived."""
        c = self.candidate
        mtime = self.mtime_ns or 0
        floor = before.version_floor if before is not None else 0
        return ServedIdentity(
            self.key,
            mtime,
            c.version,
            max(mtime, c.decided_ns),
            c.version if c.version > 0 else max(c.watermark, floor),
            self.remote.sha256 if self.remote is not None else c.sha256,
        )


@dataclass(frozen=True, slots=True)
class Step:
    located: Located
    verdict: str  # a Freshness value, or a rejection reason
    applies: bool
    detail: str = ""
    refused: bool = False  # a forced message refused by the replay guard (verdict: why)


@dataclass(frozen=True, slots=True)
class Plan:
    steps: list[Step]

    @property
    def winners(self) -> list[Step]:
        """The applicable steps, latest decision last."""
        return [s for s in self.steps if s.applies]


def plan(
    served: ServedIdentity | None,
    located: Sequence[Located],
    *,
    skip_through: int = 0,
    known_bad: Callable[[Located], str | None] = lambda _: None,
    refuse_force: Callable[[Candidate], tuple[str, str] | None] = lambda _: None,
    rolled_back_at: float = 0.0,
) -> Plan:
    """Judge ``located`` in order against ``served``, each against the state before it."""
    state = served
    steps: list[Step] = []
    for item in located:
        c = item.candidate
        if item.error is not None and item.error.reason != "missing":
            steps.append(Step(item, item.error.reason, False, str(item.error)))
            continue
        bad = known_bad(item)
        if bad is not None:
            steps.append(Step(item, "known_bad", False, bad))
            continue
        verdict = judge_located(state, item, skip_through, rolled_back_at=rolled_back_at)
        if verdict is Freshness.FORCED:
            without = judge_located(
                state, item, skip_through, force=False, rolled_back_at=rolled_back_at
            )
            refusal = None if without.apply else refuse_force(c)
            if refusal is not None:
                steps.append(Step(item, refusal[0], False, refusal[1], refused=True))
                continue
        if verdict.apply:
            steps.append(Step(item, str(verdict), True))
            state = item.identity_after(state)
        else:
            steps.append(Step(item, str(verdict), False))
    return Plan(steps)


def judge_located(
    state: ServedIdentity | None,
    item: Located,
    skip_through: int,
    *,
    force: bool | None = None,
    mtime_ns: int | None = None,
    rolled_back_at: float = 0.0,
) -> Freshness:
    """:func:`judge_candidate` for a located candidate; an unversioned remote one without a
    listing is newer iff its sha256 differs from the served one's; a versioned one received
    before the last rollback (``rolled_back_at``, monotonic: in flight when it happened)
    needs ``force``, like every version the node knew then."""
    c = item.candidate
    forced = c.force if force is None else force
    if not forced and state is not None and c.version > 0 and c.received_at <= rolled_back_at:
        return Freshness.STALE_VERSION
    remote = item.remote
    if (
        remote is not None
        and item.identity is None
        and state is not None
        and not forced
        and c.version == 0
    ):
        same = remote.sha256 is not None and remote.sha256 == state.sha256
        return Freshness.SAME_FILE if same else Freshness.FILE_CHANGED
    mtime = item.mtime_ns if mtime_ns is None else mtime_ns
    return judge_candidate(state, item.key, c.version, forced, mtime, skip_through)


def judge_candidate(
    state: ServedIdentity | None,
    path: str,
    version: int,
    force: bool,
    mtime_ns: int | None,
    skip_through: int,
) -> Freshness:
    """The staleness rule, with versions up to ``skip_through`` stale unless forced."""
    verdict = judge(state, path=path, version=version, force=force, mtime_ns=mtime_ns)
    if verdict is Freshness.NEWER_VERSION and version <= skip_through:
        return Freshness.STALE_VERSION
    return verdict
