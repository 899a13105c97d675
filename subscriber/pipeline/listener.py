"""The Redis listener: a background subscriber that never dies and never misses the newest.

The **reader** thread owns the pub/sub loop (no ``run_in_thread``, whose worker dies on the
first exception). Each session: connect → SUBSCRIBE → wait for the confirmation → catch up on
``:latest`` (``STRLEN`` first: a value over the message limit is refused without being read)
→ tell Redis what this node serves (``subscriber/pipeline/recorder.py``) → read. It PINGs on the
pub/sub connection every ``ping_interval`` and declares the session dead when a PING has gone
unanswered for ``dead_after``: a hung (SIGSTOPped) server or a half-open socket is noticed
within ~2 s, while a reader thread that was merely starved of CPU reads its PONG when it
wakes and is not fooled. Between messages the reader waits on the socket itself until the next
PING is due (no read call per wakeup; ``stop()`` wakes it through a pipe), so an idle node
costs next to nothing. redis-py can reconnect and resubscribe silently; a connect callback
catches that and catches up too (once: a new session's own catch-up covers what the session
before it saw). Any Redis error ends the session; the next one starts after
a jittered backoff (100 ms, doubling, at most 0.5 s, so a Redis that comes back is used within
a second, however long it was away).

The connections come from ``subscriber/pipeline/redis_link.py`` (SPEC §10): one server, Sentinel or
Cluster, ``SUBSCRIBE`` or ``SSUBSCRIBE``. A failover is a reconnect: the next session finds
the new master and catches up on ``:latest``. Behind Sentinel the session also ends when the
sentinels name another master (checked every ``master_check``), since a master demoted by a
manual failover keeps its subscribers' sockets open while nothing is published there.

A node of several instances (SPEC §13) has one listener per instance, and one of them reads for
all: the others :meth:`~CheckpointSubscriber.join` it before it starts. Its session subscribes
to every instance's channel on one connection, catches each one up, and hands each message to
the listener of its channel. What one instance's listener does with a message is parsing,
judging against its served version and queueing (no file system, no load, no fetch: those are
its applier's, on its own threads), so one instance's bad message, slow fetch or hung load
never delays another's.

Every message is parsed here and handed to the applier (``applier.py``) with what
``:latest`` held before it (mirrored by ``common/latest.py``). A message that cannot be a
notification is rejected with a reason, logged once (its text escaped), counted: nothing a
publisher sends can end a session or the thread. A catch-up that brings a message already
judged is skipped; with a secret, a signature already judged is refused as ``replayed``.
A targeted message (``nodes``, SPEC §11) that does not name this node is not considered at
all: it is acked ``ignored``. Messages refused here are acked ``rejected`` (``report``); the
others are acked by the applier once judged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import PubSub

from common.ack import AckOutcome
from common.errors import InvalidNotification
from common.keys import EPOCH_BYTES
from common.latest import moves_latest
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification, message_digest
from common.redis_io.clock import RedisClock, sample
from common.redis_io.connect import REDIS_ERRORS, RedisClient, Timeouts
from common.redis_io.url import parse_redis_url
from common.settings import Settings, redact_url
from common.textsafe import printable
from subscriber.model.holder import ModelHolder
from subscriber.model.plan import Candidate
from subscriber.pipeline.applier import Applier
from subscriber.pipeline.marks import RedisMarks, parse_marks
from subscriber.pipeline.recorder import Recorder
from subscriber.pipeline.redis_link import RedisLink, ShardedPubSubUnsupported
from subscriber.pipeline.seen import JudgedMessages, ReplayGuard
from subscriber.runtime.background import BackgroundLoop

__all__ = ["CheckpointSubscriber", "ListenerTiming", "Report"]

log = logging.getLogger(__name__)

PING_PAYLOAD = "fks-liveness"

# Told of a channel message judged here (outcome, reason, the message if it parsed, its raw
# bytes, its arrival on the monotonic clock): an ack (subscriber/pipeline/acker.py).
Report = Callable[[AckOutcome, str, CheckpointNotification | None, bytes, float], None]


@dataclass(frozen=True, slots=True)
class ListenerTiming:
    """Timeouts and pacing of the listener (the defaults meet the SPEC's ~2 s detection)."""

    read_timeout: float = 0.1
    ping_interval: float = 0.5
    dead_after: float = 1.5
    connect_timeout: float = 1.0
    command_timeout: float = 0.5
    backoff_initial: float = 0.1
    backoff_max: float = 0.5  # a Redis that returns is used within a second (issue 15)
    master_check: float = 0.5  # behind Sentinel: ask where the master is this often
    quiet: float = 0.02
    settle_max: float = 0.125  # a steady stream costs ~8 loads a second (bench/burst.py)


class CheckpointSubscriber(BackgroundLoop):
    """Subscribe to an instance's channel and feed the applier; ``start()`` / ``stop()``."""

    thread_name = "fks-listener"

    def __init__(
        self,
        holder: ModelHolder,
        settings: Settings,
        *,
        applier: Applier,
        judged: JudgedMessages,
        replay: ReplayGuard,
        recorder: Recorder | None = None,
        timing: ListenerTiming | None = None,
        node_id: str = "",
        report: Report | None = None,
        clock: RedisClock | None = None,
    ) -> None:
        super().__init__()
        self.holder = holder
        self.clock = clock or RedisClock()
        self.node_id = node_id
        self.report = None if report is None else _never_raising(report)
        self.applier = applier
        self.judged = judged
        self.replay = replay
        self.recorder = recorder
        self.metrics = holder.metrics
        self.redis_url = settings.redis_url
        self.target = parse_redis_url(settings.redis_url)
        self.sharded = settings.sharded_pubsub
        self.keys = settings.keys
        self.secret = settings.secret
        self.timing = timing or ListenerTiming()
        self.counters: Counter[str] = Counter()
        self.last_message_at: datetime | None = None
        self.last_connected_at: datetime | None = None
        self.sessions = 0
        self._tried = threading.Event()  # the first session subscribed, or failed
        self._connected = False
        self._silent_reconnect = threading.Event()
        # What :latest held as far as this node knows: its parsed message and sha1 digest,
        # and the highest version issued as far as it knows (the :version counter, every
        # versioned message heard): only to mirror the rule that moves :latest, never to
        # order decisions (a refused message must leave no version behind).
        self._latest: CheckpointNotification | None = None
        self._latest_digest = ""
        self._issued = 0
        # :epoch and :version as this node saw Redis hold them, and whether it lost them
        self.marks = RedisMarks(self.keys.epoch, self.keys.version)
        self._known_before = 0  # the highest version known when the last catch-up began
        self._offered_latest = ""  # the :latest this session's catch-up handed on (digest)
        # the listeners whose channels this one's sessions read (SPEC §13), itself first; a
        # listener that joined another reads nothing itself
        self._members: list[CheckpointSubscriber] = [self]
        self._reader: CheckpointSubscriber = self
        # a rejection's warning is logged once a second per reason (the others counted): a
        # flood of bad messages costs the reader no log line each, nor the disk its lines
        self._quiet_until: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        # stop() wakes a reader waiting on its socket through this pipe (kept for the
        # listener's life: a node may start its listener again after stopping it)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        weakref.finalize(self, _close_pipe, self._wake_read, self._wake_write)

    # -- lifecycle -------------------------------------------------------------------------

    def join(self, reader: CheckpointSubscriber) -> None:
        """Be read by ``reader``'s sessions (another instance's listener of this node, not
        started yet): one connection subscribes to both channels (SPEC §13)."""
        if reader is self or reader._reader is not reader or self._members != [self]:
            raise ValueError("a listener joins one that reads for itself, and only once")
        if reader.alive() or self.alive():
            raise RuntimeError("listeners join before either starts")
        if any(m.keys.channel == self.keys.channel for m in reader._members):
            raise ValueError(f"{self.keys.channel} is read already")
        self._reader = reader
        reader._members.append(self)

    @property
    def channels(self) -> list[str]:
        """The channels this listener's sessions subscribe to (none if it joined another)."""
        return [m.keys.channel for m in self._members] if self._reader is self else []

    def start(self) -> CheckpointSubscriber:
        """Start reading, unless another listener reads for this one."""
        if self._reader is self:
            super().start()
        return self

    def alive(self) -> bool:
        return super().alive() if self._reader is self else self._reader.alive()

    @property
    def connected(self) -> bool:
        """True while subscribed and answering; the request path reads only this."""
        return self._connected

    def stop(self, timeout: float = 1.0) -> None:
        """Unsubscribe, stop the thread, join it; returns within ``timeout``."""
        if self._reader is self:
            super().stop(timeout)
            self._all_disconnected()
        else:
            self._set_connected(False)

    @property
    def tried(self) -> bool:
        """Whether a first session has subscribed (and queued its catch-up) or failed."""
        return self._tried.is_set()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Wait until the first session has subscribed (and queued its catch-up) or failed;
        True if it is connected."""
        self._tried.wait(timeout)
        return self._connected

    def status(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "alive": self.alive(),
            "channel": self.keys.channel,
            "shared_with": [m.keys.instance_id for m in self._reader._members if m is not self],
            "sessions": self.sessions,
            "last_message_at": self.last_message_at.isoformat() if self.last_message_at else None,
            "last_connected_at": (
                self.last_connected_at.isoformat() if self.last_connected_at else None
            ),
            "counters": dict(self.counters),
        }

    # -- reader ----------------------------------------------------------------------------

    def _run(self) -> None:  # the reader
        delay = self.timing.backoff_initial
        while not self._stop.is_set():
            sessions = self.sessions
            try:
                self._session()
            except ShardedPubSubUnsupported as exc:
                if self.counters["sharded_unsupported"] == 0:
                    log.error("cannot listen on %s: %s", self.keys.channel, exc)
                self.counters["sharded_unsupported"] += 1
                self._lost(str(exc))
            except REDIS_ERRORS as exc:
                self._lost(f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the listener must never die
                log.exception("listener session failed unexpectedly; reconnecting")
                self._lost("unexpected error")
            finally:
                for member in self._members:
                    member._tried.set()
            if self._stop.is_set():
                break
            if self.sessions > sessions:  # that session had subscribed: start backoff afresh
                delay = self.timing.backoff_initial
            self._stop.wait(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.timing.backoff_max)
        self._all_disconnected()

    def _lost(self, why: str) -> None:
        if self._connected:
            log.warning("lost Redis (%s); serving with the mtime fallback meanwhile", why)
        else:
            log.debug("Redis still unavailable: %s", why)
        self.counters["connection_errors"] += 1
        self._all_disconnected()

    def _all_disconnected(self) -> None:
        """Every listener this one reads for (itself included) is out of Redis mode."""
        for member in self._members:
            member._set_connected(False)

    def _session(self) -> None:
        t = self.timing
        link = RedisLink(
            self.target,
            self.channels,
            Timeouts(t.connect_timeout, t.command_timeout),
            sharded=self.sharded,
        )
        try:
            pubsub = link.open()
            assert pubsub.connection is not None and link.client is not None
            pubsub.connection.register_connect_callback(self._on_connect)
            # a silent reconnect seen by the session that died is covered by this catch-up,
            # and what an earlier session's catch-up handed on is judged by now or retried
            self._silent_reconnect.clear()
            self._await_subscription(pubsub, link.confirmation, len(self._members))
            for member in self._members:
                member._subscribed(link.client)
            self._read(link, pubsub)
        finally:
            link.close(unsubscribe=self._stop.is_set() and self._connected)

    def _subscribed(self, client: RedisClient) -> None:
        """This instance's channel is subscribed: catch up, tell Redis what it serves, and
        serve in Redis mode."""
        self._offered_latest = ""
        self._catch_up(client, "subscribe")
        self._restore()
        self.applier.reconnected(
            latest_present=bool(self._latest_digest),
            latest=self._latest,
            digest=self._latest_digest,
        )
        self._set_connected(True)  # subscribed and caught up: Redis mode
        self._tried.set()

    def _await_subscription(self, pubsub: PubSub, confirmation: str, count: int) -> None:
        deadline = time.monotonic() + self.timing.dead_after
        confirmed = 0
        while time.monotonic() < deadline and not self._stop.is_set():
            message = pubsub.get_message(timeout=self.timing.read_timeout)
            if message is not None and message["type"] == confirmation:
                confirmed += 1
                if confirmed == count:
                    return
        raise redis.TimeoutError(f"no {confirmation.upper()} confirmation from Redis")

    def _read(self, link: RedisLink, pubsub: PubSub) -> None:
        t = self.timing
        client = link.client
        assert client is not None
        last_ping = last_check = time.monotonic()
        unanswered_since: float | None = None
        sentinel = link.watches_master
        drained = False  # nothing read and waiting: the next message comes through the socket
        by_channel = {m.keys.channel.encode(): m for m in self._members}
        while not self._stop.is_set():
            sock = _socket_of(pubsub)
            if sock is None:  # not connected (redis-py reconnects on the next read)
                message = pubsub.get_message(timeout=t.read_timeout)
            elif not drained:
                message = pubsub.get_message(timeout=0.0)
                drained = message is None
            else:
                # Between messages, wait on the socket itself until a PING (or the master
                # check, or a PING's deadline) is due: no read call per wakeup, and stop()
                # wakes it through the pipe.
                due = last_ping + t.ping_interval
                if sentinel:
                    due = min(due, last_check + t.master_check)
                if unanswered_since is not None:
                    due = min(due, unanswered_since + t.dead_after)
                message = None
                if self._wait_readable(sock, due - time.monotonic()):
                    message = pubsub.get_message(timeout=0.0)
                    drained = message is None
            now = time.monotonic()
            if message is not None:
                unanswered_since = None  # Redis answered: everything sent before is read
                if message["type"] in ("message", "smessage"):
                    member = by_channel.get(_channel_name(message["channel"]))
                    if member is not None:
                        member._on_message(message["data"], "channel")
                elif message["type"] == "sunsubscribe":
                    self.counters["slot_moved"] += 1
                    raise redis.ConnectionError(
                        "Redis unsubscribed the shard channel: its slot moved"
                    )
            if self._silent_reconnect.is_set():
                self._silent_reconnect.clear()
                self.counters["silent_reconnects"] += 1
                for member in self._members:
                    member._catch_up(client, "silent reconnect")
                    member._restore()
            if now - last_ping >= t.ping_interval:
                pubsub.ping(PING_PAYLOAD)
                last_ping = now
                if unanswered_since is None:
                    unanswered_since = now
            if unanswered_since is not None and now - unanswered_since > t.dead_after:
                raise redis.TimeoutError(
                    f"no answer from Redis to a PING for {now - unanswered_since:.1f}s"
                )
            if now - last_check >= t.master_check:
                last_check = now
                moved = link.moved()
                if moved is not None:
                    self.counters["master_moved"] += 1
                    log.warning("the master moved (%s): resubscribing there", moved)
                    raise redis.ConnectionError(f"master moved: {moved}")

    def _wait_readable(self, sock: socket.socket, timeout: float) -> bool:
        """Wait up to ``timeout`` s for bytes on ``sock`` (or decrypted ones in a TLS socket),
        or for :meth:`stop`; True if ``sock`` has some."""
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        self.counters["idle_waits"] += 1
        fd = sock.fileno()
        try:
            readable, _, _ = select.select([fd, self._wake_read], [], [], max(0.0, timeout))
        except (OSError, ValueError):  # the socket was closed under us: let the read say so
            return True
        if self._wake_read in readable:
            with contextlib.suppress(OSError):
                os.read(self._wake_read, 64)
        return fd in readable

    def _interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def _on_connect(self, connection: object) -> None:
        self._silent_reconnect.set()

    def looked(self, raw_epoch: bytes, raw_counter: bytes, asked_at: float) -> None:
        """The heartbeat read ``:epoch`` and ``:version`` (``b""``: none) in a round trip
        sent at ``asked_at`` (monotonic). If they show that Redis lost this instance's data
        while this node stayed subscribed (``subscriber/pipeline/marks.py``), a trainer's
        next allocation would restart at 1, stale here by its number: the session catches
        this instance up as after a silent reconnect, on its own thread. The loss is found
        and logged, ``:latest`` published since is served (announced again above what this
        node applied), and the node's decision and ``:version`` are put back."""
        loss = self.marks.beat(*parse_marks(raw_epoch, raw_counter), asked_at)
        if not loss or not self.connected:
            return
        self.marks.acted()
        self.counters["loss_seen_while_subscribed"] += 1
        log.info("%s while subscribed: catching up", loss)
        self._wake_reader()

    def look_again(self) -> None:
        """The applier's announcement again of what ``:latest`` held found it moved (a
        publication landed between the catch-up's read and now): read ``:latest`` again as
        after a loss, so a publication numbered by the restarted counter, judged stale by
        that number since, is judged again (an unsigned fleet's; see ``_handle``)."""
        self.marks.look_again()
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        reader._silent_reconnect.set()
        reader._interrupt()

    def _restore(self) -> None:
        """Tell Redis what this node serves (``subscriber/pipeline/recorder.py``) and learn the
        ``:epoch`` token it holds now."""
        if self.recorder is not None:
            model = self.holder.current()
            asked_at = time.monotonic()
            _, restored, epoch = self.recorder.restore(model, self.holder.applied_version)
            self.marks.restored(epoch, asked_at, self.holder.applied_version)
            if restored and model is not None and model.message is not None:
                # :latest now holds this node's decision: the mirror must say so, or the
                # next raw decision's compare-and-set (RECORD) fails against it
                with contextlib.suppress(InvalidNotification):
                    self._latest = CheckpointNotification.from_message(model.message)
                    self._latest_digest = message_digest(model.message)

    def _catch_up(self, client: RedisClient, why: str) -> None:
        """Read ``:version`` and ``:latest`` (measured first: an oversized value is refused
        unread)."""
        self.counters["catch_ups"] += 1
        # what this node knew before this catch-up: a :latest numbered at or below it, yet
        # issued after its decision, was numbered by a counter that restarted
        self._known_before = self.holder.highest_version
        sample(client, self.keys.latest, self.clock)  # Redis' clock, for forced messages' age
        epoch, counter = parse_marks(  # as much of each as the heartbeat reads (registry.py)
            client.getrange(self.keys.epoch, 0, EPOCH_BYTES - 1),
            client.getrange(self.keys.version, 0, EPOCH_BYTES - 1),
        )
        # Redis lost this instance's data since this node last looked (a restart without
        # persistence, FLUSHALL: marks.py). Whatever :latest holds that this node never
        # judged was published after the loss, under versions that restarted: it is the
        # newer decision (issue 24, b1).
        loss, adopt = self.marks.caught_up(epoch, counter)
        lost = bool(loss)
        if lost:
            self.counters["data_loss"] += 1
            log.warning(
                "Redis lost its data (%s): a :latest published since is the newer decision, "
                "whatever its version",
                loss,
            )
        else:
            self.holder.note_version(counter)
        self._issued = max(self._issued, counter)
        try:
            self._read_latest(client, why, lost or adopt)
        finally:
            # after a loss the counter restarted: it says nothing of what came before, and
            # :latest is judged against what this node applied
            self.holder.note_version(counter)

    def _read_latest(self, client: RedisClient, why: str, lost: bool) -> None:
        """Read ``:latest`` (measured first: an oversized value is refused unread) and hand
        it on (``lost``: Redis lost its data since this node last looked)."""
        size = int(client.strlen(self.keys.latest))
        if size == 0:
            self._latest, self._latest_digest = None, ""
            return
        if size > MAX_MESSAGE_BYTES:
            self._latest, self._latest_digest = None, f"oversize:{size}"
            self._reject(
                "oversize",
                f"{self.keys.latest} holds {size} bytes, over the {MAX_MESSAGE_BYTES}-byte "
                "limit; not read",
                "latest",
            )
            return
        raw = client.get(self.keys.latest)
        if raw is not None:
            log.debug("catch-up after %s: reading %s", why, self.keys.latest)
            self._on_message(raw, "latest", adopt=lost)

    def _set_connected(self, connected: bool) -> None:
        if connected and not self._connected:
            self.sessions += 1
            if self.sessions > 1 and self._reader is self:  # the node's, counted once
                self.metrics.reconnects.inc()
            self.last_connected_at = datetime.now(UTC)
            log.info("subscribed to %s at %s", self.keys.channel, redact_url(self.redis_url))
        self._connected = connected
        self.metrics.listener_connected.set(1 if connected else 0)

    # -- messages --------------------------------------------------------------------------

    def _on_message(self, data: bytes | str, via: str, *, adopt: bool = False) -> None:
        """Parse one message and hand it on; never raises. ``adopt``: a ``:latest`` published
        after Redis lost its data (announced again above what the node knows, if its version
        would make it stale)."""
        try:
            self._handle(data, via, adopt)
        except Exception as exc:  # noqa: BLE001 - nothing a publisher sends ends a session
            self._reject("invalid", f"unexpected {type(exc).__name__} while parsing", via)

    def _handle(self, data: bytes | str, via: str, adopt: bool = False) -> None:
        received = time.monotonic()
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        self.last_message_at = datetime.now(UTC)
        self.metrics.notifications.labels(via).inc()
        self.counters[f"received_{via}"] += 1
        digest = message_digest(raw) if len(raw) <= MAX_MESSAGE_BYTES else ""
        if via == "latest":
            self._latest_digest = digest
            self._latest = None
            # already judged, or handed on by this session's catch-up and not judged yet (a
            # silent reconnect right after a session's start catches up twice): nothing new.
            # After Redis lost its data, a message judged stale by its number alone since
            # Redis last held the token intact (heard on the channel under a version the
            # restarted counter allocated again) is judged anew, in a fleet that does not
            # sign. A signed fleet holds Redis' writers to what the secret signs: deleting
            # :epoch and putting back a signed message judged stale would announce it again
            # above every version; there a signature is judged once, and the trainer's
            # message in the heartbeat's window is acked stale (docs/RELIABILITY.md).
            again = (
                adopt
                and self.secret is None
                and bool(digest)
                and self.judged.stale_by_number(digest, since=self.marks.again_since)
            )
            if digest and not again and (digest in self.judged or digest == self._offered_latest):
                self.counters["already_judged"] += 1
                self.holder.stale("already_judged", via, "", 0)
                with contextlib.suppress(InvalidNotification):  # what :latest holds, known
                    self._latest = CheckpointNotification.from_message(raw, secret=self.secret)
                return
        try:
            notification = CheckpointNotification.from_message(raw, secret=self.secret)
        except InvalidNotification as exc:
            self._reject(exc.reason, str(exc), via, raw=raw, received=received)
            return
        if not notification.for_instance(self.keys.instance_id):
            self._reject(
                "other_instance",
                f"a message for instance {notification.instance!r} on {self.keys.channel}",
                via,
                raw=raw,
                received=received,
                parsed=notification,
            )
            return
        if not notification.targets(self.node_id):
            self.counters["ignored"] += 1
            if via == "latest":
                self._latest = notification
            elif self.report is not None:
                self.report("ignored", "not_targeted", notification, raw, received)
            log.debug("a message for nodes %s only: ignored", notification.nodes)
            return
        decided = None
        known = self.holder.highest_version  # decisions applied before this message
        issued, self._issued = self._issued, max(self._issued, notification.version)
        if via == "latest":
            self._latest = notification
            if self.replay.replayed(notification) is not None:
                # a signature already judged (re-encoded bytes, or a replay put into
                # :latest): nothing new, as a digest already judged
                self.counters["already_judged"] += 1
                self.holder.stale("already_judged", via, "", 0)
                return
            before = ""
            when = notification.issued_at or notification.saved_at
            decided = int(when.timestamp() * 1e9)  # decided when published, not when read
        else:
            replayed = self.replay.replayed(notification)
            if replayed is not None:
                self._reject(
                    "replayed", replayed, via, raw=raw, received=received, parsed=notification
                )
                return
            before = self._latest_digest
            # a targeted message never moves :latest (the publisher's script leaves it)
            if notification.nodes is None and moves_latest(self._latest, notification, issued):
                self._latest, self._latest_digest = notification, digest
        candidate = Candidate.from_notification(
            notification,
            via,
            raw=raw,
            latest_before=before,
            received_at=received,
            decided_ns=decided,
            watermark=known,
        )
        if via == "latest" and self._numbered_before_a_loss(notification):
            # Issued after the decision this node serves, yet numbered at or below what it
            # knows, and :latest holds it: its version was allocated after Redis lost its
            # data (or a lagging replica took over), so by its number it would be stale. It
            # is the fleet's newest decision: announced again under a version above every
            # one this node knows, it reaches every node (this one included) as such.
            self.counters["reannounced"] += 1
            log.warning(
                "%s holds %s as version %d, issued after this node's decision (Redis lost its "
                "data%s): announcing it again above version %d",
                self.keys.latest,
                printable(notification.model_path),
                notification.version,
                " and said so" if adopt else "?",
                self.holder.highest_version,
            )
            self.applier.reannounce(notification, digest)
            return
        if via == "channel" and self.applier.decider.stale_on_arrival(candidate):
            return  # a stale or duplicate notice: judged and acked here, nothing handed on
        if via == "latest":
            self._offered_latest = digest
        self.applier.offer(candidate)

    def _numbered_before_a_loss(self, notification: CheckpointNotification) -> bool:
        """Whether ``:latest``'s ``notification`` (not judged before) carries a version at or
        below what this node knew before the catch-up (the counter it reads now may count
        ``notification`` itself) although it was issued after the decision this node
        serves (on Redis' clock), unless it is that decision itself: only a counter that
        restarted gives that, and its number may name another checkpoint the fleet saw. A
        replay of an older message was issued before; a forced or targeted one is judged as
        it is."""
        model = self.holder.current()
        issued = notification.issued_at
        if (
            model is None
            or issued is None
            or notification.force
            or notification.nodes is not None
            or not 0 < notification.version <= self._known_before
            # the very checkpoint this node serves under that very version: nothing collides
            or (notification.version == model.version and notification.sha256 == model.sha256)
        ):
            return False
        return issued.timestamp() > model.loaded_at.timestamp() + self.clock.offset

    def _reject(
        self,
        reason: str,
        detail: str,
        via: str,
        *,
        raw: bytes = b"",
        received: float = 0.0,
        parsed: CheckpointNotification | None = None,
    ) -> None:
        self.counters[f"rejected_{reason}"] += 1
        self.holder.record_rejection(reason, detail, via)
        now = time.monotonic()
        if now < self._quiet_until.get(reason, 0.0):
            self._unlogged[reason] += 1
        else:
            self._quiet_until[reason] = now + 1.0
            more = self._unlogged.pop(reason, 0)
            log.warning(
                "rejected a message for instance %s from %s (%s): %s%s",
                self.keys.instance_id,
                via,
                reason,
                printable(detail),
                f" ({more} more for this reason in the last second, not logged)" if more else "",
            )
        if via == "channel" and self.report is not None:
            self.report("rejected", reason, parsed, raw, received)


def _never_raising(report: Report) -> Report:
    """``report``, its exceptions logged: an ack (a caller's callback included) never ends a
    session, and a message is reported once."""

    def guarded(*judged: Any) -> None:
        try:
            report(*judged)
        except Exception:  # noqa: BLE001
            log.exception("reporting a judged message failed")

    return guarded


def _channel_name(channel: bytes | str) -> bytes:
    return channel.encode() if isinstance(channel, str) else bytes(channel)


def _socket_of(pubsub: PubSub) -> socket.socket | None:
    """The pub/sub connection's socket, when connected."""
    connection = pubsub.connection
    sock = getattr(connection, "_sock", None) if connection is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _close_pipe(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
