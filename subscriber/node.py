"""A serving node: the holder, the applier, the listener, the fallback and the registry.

The request path calls :meth:`ServingNode.model_for_request`: while the listener is
connected and a model is served, that is two attribute reads and no I/O at all, and no
request waits for a load; otherwise it is the fallback's one ``os.stat``. Nothing on the
request path talks to Redis. With Redis away, a request that sees the disk change waits for
the applier's look at it (at most ``FRESH_WAIT_SECONDS``), so the next request after a newer
file is answered by it; a request with no model at all waits for one look at the disk.

Redis is the fleet's record of decisions: start-up subscribes and catches up on ``:latest``
first (bounded by the listener's connect timeout), and only a node that Redis gave no model
(unreachable, nothing announced yet, or a file it cannot load) looks at the disk. So a node
started later serves what the running nodes serve, a forced rollback in ``:latest`` included.
What a node served from disk while Redis was away is announced when Redis returns
(``subscriber/pipeline/recorder.py``), so the others and later nodes agree with it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from common.ack import Ack, AckOutcome, answer_digest, judged_fields
from common.architectures import architecture_names
from common.notification import CheckpointNotification
from common.redis_io.clock import RedisClock
from common.settings import Settings
from subscriber.model.holder import ModelHolder
from subscriber.model.loader import LoadOptions
from subscriber.model.plan import Candidate
from subscriber.model.snapshot import ServedModel
from subscriber.pipeline.acker import Acker
from subscriber.pipeline.applier import Applier
from subscriber.pipeline.decider import Decider
from subscriber.pipeline.fallback import FallbackWatcher
from subscriber.pipeline.listener import CheckpointSubscriber, ListenerTiming
from subscriber.pipeline.recorder import Recorder
from subscriber.pipeline.registry import NodeRegistry
from subscriber.pipeline.seen import JudgedMessages, ReplayGuard
from subscriber.process.operations import Operations
from subscriber.process.workers import node_id_for
from subscriber.runtime.metrics import Metrics
from subscriber.runtime.threads import limit_threads
from subscriber.runtime.traffic import Traffic

__all__ = ["START_WAIT_SECONDS", "ServingNode"]

log = logging.getLogger(__name__)

START_WAIT_SECONDS = 10.0


class ServingNode:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        metrics: Metrics | None = None,
        options: LoadOptions | None = None,
        timing: ListenerTiming | None = None,
        listen: bool = True,
        instance: str | None = None,
    ) -> None:
        """The node of ``instance`` (default: ``FKS_INSTANCE_ID`` if the settings serve it,
        else their first instance); a node of several instances is a
        :class:`~subscriber.group.NodeGroup` of these."""
        every = settings or Settings()
        if instance is None:
            ids = every.instances
            instance = every.instance_id if every.instance_id in ids else ids[0]
        self.settings = s = every.for_instance(instance)
        self.instances = every.instances  # every instance of this node (SPEC §13)
        self._looked_at = -1.0  # look_soon's last ask
        self.timing = timing or ListenerTiming()
        self.holder = ModelHolder(s, metrics=metrics, options=options)
        self.metrics = self.holder.metrics
        self.node_id = node_id_for(s)
        self.metrics.node_info.labels(self.node_id, str(os.getpid())).set(1)
        self.traffic = Traffic()
        self.holder.on_swap(lambda model: self.traffic.swapped(model.generation))
        self.judged = JudgedMessages()
        # Redis' clock as this node estimates it: heartbeats and forced messages' ages are
        # judged on it, never on this machine's own clock (common/redis_io/clock.py)
        self.clock = RedisClock()
        self.replay = ReplayGuard(
            enabled=s.secret is not None, max_age_seconds=s.force_max_age_seconds, clock=self.clock
        )
        self.decider = Decider(
            self.holder,
            judged=self.judged,
            replay=self.replay,
            remote_url=s.model_url,
            on_judged=self._judged,
        )
        self.recorder = (
            Recorder(s.redis_url, s.keys, secret=s.secret, sharded=s.sharded_pubsub)
            if listen
            else None
        )
        self.applier = Applier(
            self.decider,
            quiet=self.timing.quiet,
            settle_max=self.timing.settle_max,
            poll=s.fallback_poll_seconds,
            missing_retry=s.missing_retry_seconds,
            # the disk is polled once Redis is known to be away (not before a first try)
            in_fallback=lambda: (
                not self.listener.connected and (not self.listen or self.listener.tried)
            ),
            recorder=self.recorder,
            node_id=self.node_id,
            remote_poll=s.remote_poll_seconds if s.model_url else None,
        )
        self.fallback = FallbackWatcher(self.holder, self.applier)
        self.listener = CheckpointSubscriber(
            self.holder,
            s,
            applier=self.applier,
            judged=self.judged,
            replay=self.replay,
            recorder=self.recorder,
            timing=self.timing,
            node_id=self.node_id,
            report=self._report,
            clock=self.clock,
        )
        self.applier.on_latest_moved = self.listener.look_again
        self.registry = NodeRegistry(
            s.redis_url,
            s.keys,
            self.describe,
            node_id=self.node_id,
            interval=s.heartbeat_seconds,
            secret=s.secret,
            clock=self.clock,
            on_look=self.listener.looked if listen and self.recorder is not None else None,
        )
        self.acker = (
            Acker(s.redis_url, s.keys, self.metrics, registry=self.registry.write)
            if listen
            else None
        )
        self.listen = listen
        # an operator's reload and rollback: on every worker of `fks serve --workers N`
        self.operations = Operations.for_node(
            self.holder, s, self.node_id, instance_index=every.instances.index(instance)
        )

    @staticmethod
    def registry_id(settings: Settings) -> str:
        return node_id_for(settings)

    @property
    def mode(self) -> str:
        """``"redis"`` while the listener is connected, ``"mtime"`` while falling back."""
        return "redis" if self.listener.connected else "mtime"

    def model_for_request(self) -> ServedModel | None:
        """The snapshot one request uses from start to end."""
        current = self.holder.current()
        if current is not None and self.listener.connected:
            return current
        return self.fallback.check()

    def start(self) -> ServingNode:
        """Catch up on Redis, else look at the disk; listen and heartbeat; never fails.

        Sets torch's intra-op threads and numpy's BLAS threads to ``FKS_TORCH_THREADS``
        (default 1; 0 leaves them; ``subscriber/runtime/threads.py``): a server of small policies
        gains nothing from them, and their spinning steals the CPU from Redis and the other
        requests (bench/swap_latency.py shows it on 2 cores). With ``FKS_SWITCH_INTERVAL_MS``
        set (default 0: Python's 5 ms is left), sets the interpreter's switch interval: the
        longest a request waits for a background thread to give the GIL back.
        """
        self.begin()
        self.listen_now()
        self.caught_up()
        self.settle(self.look_at_disk())
        return self

    # start()'s steps, in order, each for every node of a group before the next
    # (subscriber/group.py): one connection subscribes for all, every catch-up and first
    # look at the disk runs at once, not one instance after another

    def begin(self) -> None:
        """The process' thread limits, the operations, the acker and the applier."""
        limit_threads(self.settings.torch_threads)
        if self.settings.switch_interval_ms > 0:
            # A thread that loads, acks or parses holds the GIL for at most this long while a
            # request waits for it (Python's default, 5 ms, is kept unless this is set:
            # shorter intervals gave a higher storm p99 in bench/storm.py).
            sys.setswitchinterval(self.settings.switch_interval_ms / 1000)
        self.operations.start()
        # The built-ins and the fks.architectures entry points, registered before any load.
        log.info("architectures: %s", ", ".join(architecture_names()))
        if self.acker is not None:
            self.acker.start()
        self.applier.start()

    def listen_now(self) -> None:
        """Start the listener (a no-op for one that another instance's listener reads for)."""
        if self.listen:
            self.listener.start()

    def caught_up(self) -> None:
        """Wait for the first session (or its failure) and for its catch-up to be applied."""
        if self.listen:
            t = self.timing
            self.listener.wait_first_attempt(t.connect_timeout + t.dead_after + 0.5)
            self.applier.wait_idle(START_WAIT_SECONDS)  # the catch-up, if any, is applied

    def look_at_disk(self) -> int | None:
        """Ask the applier for a look at the disk if Redis gave no model; its ticket."""
        return self.applier.request_disk_check() if self.holder.current() is None else None

    def settle(self, ticket: int | None) -> None:
        """Wait for that look, say what is served, and start the heartbeat."""
        if ticket is not None and not self.applier.wait_disk_check(ticket, START_WAIT_SECONDS):
            log.warning("%s: the first load is still running; starting meanwhile", self.name)
        if self.holder.current() is None:
            log.warning("%s: no checkpoint served yet; answering 503 until one appears", self.name)
        if self.listen:
            self.registry.start()

    def look_soon(self) -> None:
        """Ask the applier for a look at the disk, at most once a second, never waiting: a
        readiness probe's (``/v2/health/ready``) for a model not served yet. A probe that
        waited would hold a thread per probe while a large file is read (or re-read as it
        changes), so probes answer at once and the look's result shows in a later one."""
        now = time.monotonic()
        if now - self._looked_at >= 1.0:
            self._looked_at = now
            self.applier.request_disk_check()

    @property
    def name(self) -> str:
        """The instance this node serves: its model's name under SPEC §14."""
        return self.settings.instance_id

    def stop(self) -> None:
        self.operations.stop()
        self.listener.stop()
        self.applier.stop()
        if self.acker is not None:
            self.acker.stop()
        if self.listen:
            self.registry.stop()
        if self.recorder is not None:
            self.recorder.close()
        self.holder.trim.cancel()
        self.holder.lane.close()

    def describe(self) -> dict[str, Any]:
        model = self.holder.current()
        requests, errors = self.traffic.snapshot()
        return {
            "mode": self.mode,
            "version": model.version if model else None,
            "generation": model.generation if model else None,
            "path": (model.origin or str(model.path)) if model else None,
            "sha256": model.sha256 if model else None,
            "loaded_at": model.loaded_at.isoformat() if model else None,
            "model_name": model.model_name if model else None,
            "instances": self.instances,  # what this node serves (fks status shows it)
            # since the last swap: what `fks rollout` watches on its canaries
            "requests": requests,
            "errors": errors,
        }

    # -- acks (SPEC §11) -------------------------------------------------------------------

    def _judged(self, c: Candidate, outcome: AckOutcome, reason: str) -> None:
        """The applier judged a notification: ack it."""
        received = c.first_received_at if c.first_received_at is not None else c.received_at
        self._report(outcome, reason, c.notification, c.raw or b"", received)

    def _report(
        self,
        outcome: AckOutcome,
        reason: str,
        notification: CheckpointNotification | None,
        raw: bytes,
        received: float,
    ) -> None:
        """Ack a judged message. Its callers guard it: the listener wraps it (a report never
        ends a session) and the decider catches what it raises (never the applier's batch)."""
        if self.acker is None:
            return
        model = self.holder.current()
        if notification is not None and outcome in ("applied", "stale"):
            # A canary (it judged a message targeted at it) writes its entry every 0.25 s
            # until the fleet moves: a message for every node applied, or the promotion of
            # what it serves. A refused, replayed or older message changes nothing of that.
            if notification.nodes is not None:
                self.registry.watch()
            elif outcome == "applied" or (
                model is not None and notification.version >= model.version > 0
            ):
                self.registry.unwatch()
        ack = Ack(
            node=self.node_id,
            outcome=outcome,
            reason=reason[:200],
            generation=model.generation if model else None,
            ms=max(0.0, (time.monotonic() - received) * 1e3) if received else 0.0,
            answers=answer_digest(raw) if raw else None,
            **judged_fields(notification, raw),
        )
        secret = self.settings.secret
        self.acker.ack(ack.signed(secret) if secret else ack)
