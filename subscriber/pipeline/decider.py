"""From candidates to at most one swap: a batch of notifications, or what lies on disk.

:meth:`Decider.apply_batch` locates the candidates (on the load lane: confinement and
``stat`` are file system calls that can hang), replays them through the ordering rule of
``subscriber/model/plan.py``, loads the latest applicable one and, if that fails, the one before
it; every notification of the batch is then reported to ``on_judged`` (the acks of SPEC §11):
``applied``, ``rejected`` with its reason, or ``stale`` (a newer one of the same batch won:
``superseded``). A notification whose file is missing is reported once its retries end.
:meth:`Decider.check_disk` is the mtime fallback and the cold start: the tier resolution,
then the newest file that is newer than the served decision (or, with no model, the newest
that loads). :meth:`Decider.check_remote` does the same for the remote tier 2
(``STAT_PAIR_RL_URL``, ``subscriber/fetching/remote_tier.py``). Every skip and rejection is counted
and logged once with its reason.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path

from common.ack import AckOutcome
from common.checkpoint.file import FileIdentity
from common.errors import CheckpointError
from common.notification import CheckpointNotification, message_digest
from common.staleness import Freshness
from subscriber.fetching.remote_tier import newest_object
from subscriber.model.holder import ModelHolder, Outcome
from subscriber.model.plan import Candidate, Located, judge_candidate, judge_located, plan
from subscriber.pipeline.seen import JudgedMessages, ReplayGuard

__all__ = ["RETRIED", "BatchResult", "Decider", "Judged"]

log = logging.getLogger(__name__)

# Failures that a notification is retried after (for FKS_MISSING_RETRY_SECONDS): its file is
# not there yet, or its store could not be reached. Not ``blob_missing``: a blob named by its
# hash that is gone from Redis will not appear, and the trainer waiting for acks hears it now.
RETRIED = frozenset({"missing", "fetch_failed"})

_REFUSED_ON_DISK = 256  # files refused by disk scans, remembered so each is said once

# Told of every notification judged: (the candidate, its outcome, the reason).
Judged = Callable[[Candidate, AckOutcome, str], None]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The swap a batch caused (if any), its candidate, and the candidates whose file was
    missing (to retry: shared storage can lag behind the notification)."""

    outcome: Outcome | None = None
    candidate: Candidate | None = None
    missing: list[Candidate] = field(default_factory=list)
    why_missing: dict[int, str] = field(default_factory=dict)  # id(candidate) -> reason


@dataclass(eq=False, repr=False)
class Decider:
    holder: ModelHolder
    _: KW_ONLY
    judged: JudgedMessages = field(default_factory=JudgedMessages)
    replay: ReplayGuard = field(
        default_factory=lambda: ReplayGuard(enabled=False, max_age_seconds=300.0)
    )
    remote_url: str | None = None
    on_judged: Judged | None = None

    def __post_init__(self) -> None:
        self.watch: Path | None = None
        self._last_reason: str | None = None
        # (path, reason) of files a disk scan found and refused: said once, not every scan
        self._refused_on_disk: OrderedDict[tuple[str, str], None] = OrderedDict()

    def apply(self, notification: CheckpointNotification, *, source: str = "channel") -> Outcome:
        """Judge and apply one notification now (tests, tools); the listener batches."""
        result = self.apply_batch([Candidate.from_notification(notification, source)])
        if result.outcome is not None:
            return result.outcome
        reason = self._last_reason or "stale"
        return Outcome(False, reason, self.holder.current())

    def apply_batch(self, batch: Sequence[Candidate]) -> BatchResult:
        h = self.holder
        self._last_reason = None
        try:
            located = h.lane.run(
                lambda: [h.locate(c) for c in batch], what=f"locating {len(batch)} candidate(s)"
            )
        except CheckpointError as exc:
            for c in batch:
                h.refused(exc, c.source, c.path, c.version)
                self.judged_as(c, "rejected", exc.reason)
            self._last_reason = exc.reason
            return BatchResult()
        generation = h.generation
        verdicts: dict[int, tuple[AckOutcome, str]] = {}
        steps = plan(
            h.identity(),
            located,
            skip_through=h.skip_through,
            known_bad=h.known_bad,
            refuse_force=self._refuse_force,
            rolled_back_at=h.rolled_back_at,
        ).steps
        for step in steps:
            if step.applies:
                continue
            c = step.located.candidate
            self._last_reason = step.verdict
            error = step.located.error
            path = str(step.located.real or c.path)
            if error is not None:
                h.refused(error, c.source, path, c.version)
                verdicts[id(c)] = ("rejected", error.reason)
            elif step.refused:
                h.record_rejection(step.verdict, step.detail, c.source)
                log.warning("refused a forced message for %s: %s", path, step.detail)
                verdicts[id(c)] = ("rejected", step.verdict)
            elif step.verdict == "known_bad":
                h.stale(step.verdict, c.source, path, c.version, step.detail)
                verdicts[id(c)] = ("rejected", "known_bad")
            else:
                h.stale(step.verdict, c.source, path, c.version, step.detail)
                verdicts[id(c)] = ("stale", step.verdict)
        winners = [s for s in steps if s.applies]
        missing: list[Candidate] = []
        why_missing: dict[int, str] = {}
        result = BatchResult(missing=missing, why_missing=why_missing)
        for index, step in enumerate(reversed(winners)):
            c = step.located.candidate
            try:
                prepared = h.prepare(step.located, generation_seen=generation)
            except CheckpointError as exc:
                self._last_reason = exc.reason
                if exc.reason == "superseded":
                    h.stale("superseded", c.source, str(step.located.real), c.version, str(exc))
                    break
                retrying = exc.reason in RETRIED and c.notification is not None
                h.refused(exc, c.source, str(step.located.real or c.path), c.version,
                          log_it=c.first_received_at is None)  # fmt: skip
                verdicts[id(c)] = ("rejected", exc.reason)
                if retrying:
                    missing.append(c)
                    why_missing[id(c)] = exc.reason
                continue
            outcome = h.install(prepared, step.located, generation_seen=generation)
            verdicts[id(c)] = ("applied", "swapped") if outcome.applied else ("stale", "superseded")
            earlier = len(winners) - 1 - index
            if earlier:
                h.metrics.coalesced.inc(earlier)
            result = BatchResult(outcome, c, missing, why_missing)
            self._last_reason = outcome.reason
            break
        retried = {id(c) for c in missing}
        for step in steps:
            c = step.located.candidate
            if id(c) not in retried:
                verdict = verdicts.get(id(c), ("stale", "superseded"))
                self._mark_judged(c, by_number=verdict == ("stale", str(Freshness.STALE_VERSION)))
                # a winner never loaded: a newer decision of the batch was served instead
                self.judged_as(c, *verdict)
        return result

    def stale_on_arrival(self, c: Candidate) -> bool:
        """Judge ``c`` at once if its version alone makes it stale: a versioned message, not
        forced, at or below the served decision's version (or within ``skip_through``, after
        a rollback). It is counted, remembered as judged and acked ``stale``, on the
        caller's thread, with no file system call and no hand-off: a stale or duplicate
        notice costs the node microseconds. Its path is never looked at (a stale message
        naming a file outside the roots is stale, not refused: it changes nothing either
        way). False: the applier judges it (files, batches, retries)."""
        if c.notification is None or c.force or c.version <= 0:
            return False
        h = self.holder
        served = h.identity()
        if served is None:
            return False
        verdict = judge_candidate(served, c.path, c.version, False, None, h.skip_through)
        if verdict is not Freshness.STALE_VERSION:
            return False
        h.stale(verdict, c.source, c.path, c.version)
        self._mark_judged(c, by_number=True)
        self.judged_as(c, "stale", str(verdict))
        return True

    def judged_as(self, c: Candidate, outcome: AckOutcome, reason: str) -> None:
        """Report a judged notification (files found on disk are not notifications)."""
        if self.on_judged is not None and c.notification is not None:
            try:
                self.on_judged(c, outcome, reason)
            except Exception:  # noqa: BLE001 - an ack must never break the applier
                log.exception("reporting a judged notification failed")

    def check_disk(self) -> Outcome | None:
        """Serve the newest checkpoint on disk if it is newer than the served decision (the
        mtime fallback), or, with no model at all, the newest one that loads."""
        h = self.holder

        def scan() -> tuple[Path, list[Located]]:
            resolved = h.roots.resolve()
            tier = resolved.tier if h.current() is not None else None
            found = h.roots.candidates(only_tier=tier)
            return resolved.watch, [
                h.locate(
                    Candidate(source="disk", path=str(p), decided_ns=0, watermark=h.highest_version)
                )
                for p in found
            ]

        try:
            self.watch, located = h.lane.run(scan, what="scanning the model roots")
        except CheckpointError as exc:
            log.warning("scanning the model roots failed (%s): %s", exc.reason, exc)
            return None
        for item in located:
            served = h.current()
            source = "disk" if served is None else "mtime"
            if item.error is not None or item.real is None:
                self._refused_file(item, source)
                continue
            verdict = judge_candidate(
                h.identity(), str(item.real), 0, False, item.mtime_ns, h.skip_through
            )
            if not verdict.apply or h.known_bad(item) is not None:
                continue
            c = replace(item.candidate, source=source)
            located_item = Located(c, item.real, item.identity)
            generation = h.generation
            try:
                prepared = h.prepare(located_item, generation_seen=generation)
            except CheckpointError as exc:
                if exc.reason == "superseded":
                    return None
                h.refused(exc, source, str(item.real), 0)
                continue
            return h.install(prepared, located_item, generation_seen=generation)
        return None

    def check_remote(self) -> Outcome | None:
        """Serve the newest object of ``STAT_PAIR_RL_URL`` if it is newer than the served
        decision (judged as a file: by its listed modification time)."""
        h = self.holder
        url = self.remote_url
        if url is None:
            return None
        timeout = h.fetch_options.timeout
        try:
            newest = h.lane.run(
                lambda: newest_object(url, timeout=timeout), what=f"listing {url}", timeout=timeout
            )
        except CheckpointError as exc:
            log.warning("listing the remote tier failed (%s): %s", exc.reason, exc)
            return None
        if newest is None:
            return None
        ref = newest.ref
        source = "remote"
        c = Candidate(
            source=source,
            path=ref.url,
            sha256=ref.sha256,
            decided_ns=0,  # its modification time is its decision time, as a file's
            watermark=h.highest_version,
        )
        listed = FileIdentity(ref.url, newest.size, newest.mtime_ns, 0, 0)
        located = Located(c, None, listed, remote=ref)
        verdict = judge_located(h.identity(), located, h.skip_through)
        if not verdict.apply or h.known_bad(located) is not None:
            return None
        generation = h.generation
        try:
            prepared = h.prepare(located, generation_seen=generation)
        except CheckpointError as exc:
            if exc.reason != "superseded":
                h.refused(exc, source, ref.url, 0)
            return None
        return h.install(prepared, located, generation_seen=generation)

    def _refused_file(self, item: Located, source: str) -> None:
        """A file the disk scan found that cannot be served (a symlink out of the roots, a
        FIFO, a name too long): logged, counted and an event, once per path and reason
        (bounded), not on every scan. One gone since the listing (``missing``) is not."""
        error = item.error
        if error is None or error.reason == "missing":
            return
        key = (item.candidate.path, error.reason)
        if key in self._refused_on_disk:
            return
        self._refused_on_disk[key] = None
        if len(self._refused_on_disk) > _REFUSED_ON_DISK:
            self._refused_on_disk.popitem(last=False)
        self.holder.refused(error, source, item.candidate.path, 0)

    def _refuse_force(self, c: Candidate) -> tuple[str, str] | None:
        if c.notification is None:
            return None
        return self.replay.refuse_force(c.notification)

    def _mark_judged(self, c: Candidate, *, by_number: bool = False) -> None:
        """Remember ``c`` as judged (``by_number``: stale for its version alone)."""
        if c.raw is not None:
            digest = message_digest(c.raw)
            if by_number:
                self.judged.judged_stale_by_number(digest)
            else:
                self.judged.add(digest)
        if c.notification is not None:
            self.replay.judged(c.notification)
