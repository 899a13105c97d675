"""The applier thread: the only thread that loads, fed by the listener and the fallback.

- Notifications offered by the listener pile up while a load runs. When they piled up (a
  burst), the applier waits for ``quiet`` without a new arrival, at most ``settle_max``, then
  hands the whole batch to the :class:`~.decider.Decider`: 1,000 notifications in a
  second cost a handful of loads, while a lone or steadily paced one is applied at once. The
  batch is judged in arrival order (``subscriber/model/plan.py``), so no late no-op drops a newer
  decision. At most ``max_pending`` wait; past that the oldest are dropped and counted.
- A notification whose file is missing is retried with backoff (shared storage can lag
  behind the message) for ``missing_retry`` seconds, unless a newer decision lands first.
- Disk checks: asked for by requests while Redis is away (the fallback's ``os.stat`` saw a
  change) or with no model at all, and every ``poll`` seconds while Redis is away, which
  catches what one ``stat`` cannot: a file rewritten in place, a tier that was empty.
  With a remote tier (``STAT_PAIR_RL_URL``), a disk check also lists it, at most every
  ``remote_poll`` seconds: on this thread, never per request.
- After applying a message from the channel, the node records it in ``:latest`` if it is not
  there; after a reconnect, a decision it took from disk while Redis was away (newer than
  ``:latest``, or the catch-up would have replaced it) is announced (``recorder.py``).

Nothing here raises out of the thread; rollbacks never wait on it, and requests only while
Redis is away (a bounded wait for a disk check they asked for: ``subscriber/pipeline/fallback.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, replace

from common.notification import CheckpointNotification
from common.textsafe import printable
from subscriber.model.plan import Candidate
from subscriber.pipeline.decider import Decider
from subscriber.pipeline.recorder import Recorder
from subscriber.runtime.background import BackgroundLoop

__all__ = ["Applier"]

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class Applier(BackgroundLoop):
    thread_name = "fks-applier"

    decider: Decider
    _: KW_ONLY
    quiet: float = 0.02
    settle_max: float = 0.125
    poll: float = 1.0
    missing_retry: float = 10.0
    in_fallback: Callable[[], bool] = lambda: True
    recorder: Recorder | None = None
    max_pending: int = 256
    node_id: str = ""
    remote_poll: float | None = None
    # the listener's look_again: an announcement again found :latest moved meanwhile
    on_latest_moved: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        super().__init__()
        self.holder = self.decider.holder
        self._next_remote = 0.0
        self._reconnected = False
        self._latest_read: tuple[CheckpointNotification | None, str] = (None, "")
        self._reannounce: list[tuple[CheckpointNotification, str]] = []
        self._offline_generation = -1  # the last model loaded from disk while Redis was away
        self.counters: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._pending: list[Candidate] = []
        self._retries: list[tuple[float, Candidate]] = []
        self._disk = False
        self._disk_asked = 0  # tickets handed out by request_disk_check
        self._disk_taken = 0  # the ticket the running/last disk check covers
        self._disk_done = 0  # the ticket the last finished disk check covered
        self._busy = False
        self._piled_up = 0
        self._last_arrival = 0.0
        self._next_poll = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def _interrupt(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- inputs ----------------------------------------------------------------------------

    def offer(self, candidate: Candidate) -> None:
        """Queue a notification (from the listener); never blocks."""
        with self._cond:
            if self._pending:
                self._piled_up += 1
            if len(self._pending) >= self.max_pending:
                self._pending.pop(0)
                self.counters["dropped_overflow"] += 1
                self.holder.metrics.coalesced.inc()
            self._pending.append(candidate)
            self._last_arrival = candidate.received_at
            self._cond.notify_all()

    def request_disk_check(self) -> int:
        """Look at the model roots soon (never blocks; requests coalesce). Returns a ticket
        for :meth:`wait_disk_check`."""
        with self._cond:
            if not self._disk:
                self._disk = True
                self._disk_asked += 1
                self._cond.notify_all()
            return self._disk_asked

    def wait_disk_check(self, ticket: int, timeout: float) -> bool:
        """True once a disk check asked for no earlier than ``ticket`` has finished."""
        with self._cond:
            return self._cond.wait_for(lambda: self._disk_done >= ticket, timeout)

    def reconnected(
        self,
        *,
        latest_present: bool,
        latest: CheckpointNotification | None = None,
        digest: str = "",
    ) -> None:
        """The listener (re)subscribed and queued its catch-up of ``:latest`` (``latest``,
        its sha1 ``digest``): once that is judged, a decision of this node that ``:latest``
        does not hold and that is newer goes there (a file served while Redis was away is
        announced; a message heard before a failover is put back)."""
        if latest_present:
            with self._cond:
                self._reconnected = True
                self._latest_read = (latest, digest)
                self._cond.notify_all()

    def reannounce(self, notification: CheckpointNotification, digest: str) -> None:
        """Announce ``notification``'s checkpoint again under a fresh version (the listener:
        it was published after Redis lost its data, under a version that restarted), if
        ``:latest`` still holds it (``digest``: the sha1 of its bytes there) by then."""
        with self._cond:
            self._reannounce.append((notification, digest))
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending or running (within ``timeout``)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    not (
                        self._busy
                        or self._pending
                        or self._disk
                        or self._reconnected
                        or self._reannounce
                    )
                ),
                timeout,
            )

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            work = self._next_work()
            if work is None:
                continue
            batch, disk, announce, again = work
            try:
                for notification, digest in again:
                    self._announce_again(notification, digest)
                if batch:
                    self._apply(batch)
                if disk:
                    offline = self.in_fallback()
                    outcomes = [self.decider.check_disk()]
                    if self._remote_due(offline):
                        outcomes.append(self.decider.check_remote())
                    for outcome in outcomes:
                        if offline and outcome is not None and outcome.applied and outcome.model:
                            self._offline_generation = outcome.model.generation
                if announce:
                    self._announce()
            except Exception:  # noqa: BLE001 - the applier must never die
                log.exception("applying failed unexpectedly")
                self.counters["apply_errors"] += 1
            finally:
                with self._cond:
                    self._busy = False
                    if disk:
                        self._disk_done = self._disk_taken
                    self._cond.notify_all()

    def _next_work(
        self,
    ) -> tuple[list[Candidate], bool, bool, list[tuple[CheckpointNotification, str]]] | None:
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                due = [c for at, c in self._retries if at <= now]
                if due:
                    self._retries = [(at, c) for at, c in self._retries if at > now]
                    self._pending[:0] = due  # they arrived before anything pending now
                polling = self.in_fallback()
                poll_due = polling and now >= self._next_poll
                if self._pending or self._disk or poll_due or self._reconnected or self._reannounce:
                    break
                waits = [0.5] + [at - now for at, _ in self._retries]
                if polling:
                    waits.append(self._next_poll - now)
                self._cond.wait(max(0.001, min(waits)))
            if self._stop.is_set():
                return None
            if self._piled_up and self._pending:
                self._settle()
            batch, self._pending, self._piled_up = self._pending, [], 0
            disk = self._disk or poll_due
            self._disk = False
            self._disk_taken = self._disk_asked
            if disk:
                self._next_poll = time.monotonic() + self.poll
            announce, self._reconnected = self._reconnected, False
            again, self._reannounce = self._reannounce, []
            self._busy = True
            return batch, disk, announce, again

    def _remote_due(self, offline: bool) -> bool:
        """Whether to list the remote tier now: while Redis is away or no model is served,
        at most every ``remote_poll`` seconds."""
        if self.remote_poll is None or not (offline or self.holder.current() is None):
            return False
        now = time.monotonic()
        if now < self._next_remote:
            return False
        self._next_remote = now + self.remote_poll
        return True

    def _settle(self) -> None:
        """A burst: wait for ``quiet`` without arrivals, at most ``settle_max`` (held lock)."""
        until = time.monotonic() + self.settle_max
        while not self._stop.is_set():
            now = time.monotonic()
            quiet_for = now - self._last_arrival
            if quiet_for >= self.quiet or now >= until:
                return
            self._cond.wait(min(self.quiet - quiet_for, until - now))

    def _announce_again(self, notification: CheckpointNotification, digest: str) -> None:
        if self.recorder is not None:
            outcome = self.recorder.reannounce(
                notification, digest, node_id=self.node_id, floor=self.holder.highest_version
            )
            self.counters[f"reannounce_{outcome}"] += 1
            if outcome == "superseded" and self.on_latest_moved is not None:
                self.on_latest_moved()

    def _announce(self) -> None:
        model = self.holder.current()
        if self.recorder is None or model is None:
            return
        if model.generation == self._offline_generation:  # decided while Redis was away
            self.counters[f"announce_{self.recorder.announce(model, node_id=self.node_id)}"] += 1
            return
        latest, digest = self._latest_read
        if latest is None or latest.nodes is not None or not model.version > latest.version > 0:
            return
        if model.message is not None:
            # :latest is older than what this node applied from the channel: a failover to a
            # replica that missed the publication, Redis' data lost, or an old message put
            # back by a Redis writer (issue 24, d1, x1)
            outcome = self.recorder.supersede(model.message, model.version, digest)
            self.counters[f"supersede_{outcome}"] += 1
        elif model.source == "disk":
            # the file this node started from carries a version above :latest's: announced,
            # so :latest is not left older than what the fleet serves (never a rollback or a
            # reload: those are this node's own decisions)
            self.counters[f"announce_{self.recorder.announce(model, node_id=self.node_id)}"] += 1

    def _apply(self, batch: list[Candidate]) -> None:
        result = self.decider.apply_batch(batch)
        outcome = result.outcome
        self.counters[f"outcome_{outcome.reason if outcome else 'none'}"] += 1
        now = time.monotonic()
        for c in result.missing:
            first = c.first_received_at if c.first_received_at is not None else c.received_at
            waited = now - first
            if waited >= self.missing_retry:
                log.warning(
                    "gave up on %s after %.1f s: the file never appeared",
                    printable(c.path),
                    waited,
                )
                why = result.why_missing.get(id(c), "missing")
                self.decider.judged_as(c, "rejected", why)
                continue
            delay = min(2.0, max(0.1, waited))
            with self._cond:
                self._retries.append((now + delay, replace(c, first_received_at=first)))
            self.counters["missing_retries"] += 1
        if (
            outcome is not None
            and outcome.applied
            and result.candidate is not None
            and result.candidate.source == "channel"
            and not result.candidate.targeted  # a canary never enters :latest
            and self.recorder is not None
        ):
            assert outcome.model is not None  # applied
            served = outcome.model.version
            self.counters[f"record_{self.recorder.record(result.candidate, served)}"] += 1
