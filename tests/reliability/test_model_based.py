"""A model-based test of a serving node: Hypothesis drives random sequences of everything
that happens to a node in production and checks the promises after every step.

The node is a real :class:`~subscriber.ServingNode` on a real ``redis-server`` (killed,
restarted with and without its data), with real checkpoint files (written atomically and in
place, good and NaN). The model tracks, much more simply than the node, what should be
served: ``fleet`` is the latest decision recorded in Redis, ``node`` what this node must
serve (they differ only after a per-node rollback or reload), ``previous`` what a rollback
would restore.

Issue 24 added what broke wave 2: refused messages with versions far above everything (they
must leave no version behind), Redis losing its data while a trainer allocates a version
before the node is back (the checkpoint must be served), replayed acks (a waiter believes only
an ack of the message it sent), and a rollout whose canary fails requests only in the last
second of its soak (it must be rolled back, and say so).

Invariants, after each step once the node is idle:
(a) the node serves the latest decision (``node`` of the model), and a node started now
    serves ``fleet``;
(b) a file that failed verification is never served, by any path;
(c) nothing a publisher sends ends a listener session (reconnects only follow a kill);
(d) ``:version`` is never below the served version once the node is connected, and one
    version never names two checkpoints;
(e) no load holds the node hostage: a rollback answers at once, the node goes idle.

``make test`` runs a bounded number of examples; ``make reliability`` a longer run
(``FKS_MODEL_EXAMPLES``, ``FKS_MODEL_STEPS``); the figures land in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from common import CheckpointNotification, RedisKeys, Settings
from common.ack import Ack, answer_digest
from common.checkpoint import file_sha256, save_checkpoint
from common.policy import SACActor
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier, notify_checkpoint
from publisher.acks import AckWaiter
from publisher.rollout import RolloutPlan, RolloutResult, run_rollout
from subscriber import ServingNode
from subscriber.errors import NoPreviousModel
from subscriber.pipeline.listener import ListenerTiming
from tests.helpers import wait_for
from tests.reliability.harness import record

EXAMPLES = int(os.environ.get("FKS_MODEL_EXAMPLES", "6"))
STEPS = int(os.environ.get("FKS_MODEL_STEPS", "14"))
KEYS = RedisKeys("default")
TIMING = ListenerTiming(backoff_initial=0.02, backoff_max=0.2)
FIRED: Counter[str] = Counter()
RUNS: Counter[str] = Counter()
POISON = [
    b"[" * 30000 + b"]" * 30000,
    b'{"model_path":"/x\\ud800"}',
    b"\xff\xfe not utf-8",
    b'{"model_path": 7}',
    b'{"version": 3}',
    b'{"model_path":"/m.pt","pad":"' + b"x" * 70000 + b'"}',
    b"NaN",
]


@dataclass(frozen=True)
class File:
    path: Path
    sha256: str
    good: bool
    order: int  # creation order: a larger one is newer on disk
    scanned: bool = True  # in the model root itself (the fallback and reloads see it)


class NodeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="fks-model-"))
        self.root = self.tmp / "models"
        self.root.mkdir()
        self.redis = EmbeddedRedis(persistent=True, workdir=self.tmp / "redis")
        (self.tmp / "redis").mkdir()
        self.redis.start()
        self.client = self.redis.client()
        self.notifier = CheckpointNotifier(self.redis.url)
        self.files: list[File] = []
        self.node: ServingNode | None = None
        # the model
        self.expected: File | None = None  # what the node must serve
        self.fleet: File | None = None  # the decision :latest holds (None: none, or unknown)
        self.fleet_bad = False  # :latest names a file that fails verification
        self.fleet_version = 0  # the version of the fleet's last versioned message
        self.previous: File | None = None
        self.versions: dict[int, str] = {}  # served version -> sha256 (message-decided)
        self.reconnects_allowed = 0.0
        self.trace: list[str] = []
        RUNS["examples"] += 1

    # -- helpers ---------------------------------------------------------------------------

    def fired(self, name: str) -> None:
        FIRED[name] += 1
        self.trace.append(name)

    def settings(self) -> Settings:
        return Settings(
            redis_url=self.redis.url,
            model_dir=self.root,
            default_model_dir=self.tmp / "default",
            fallback_poll_seconds=0.1,
            load_timeout_seconds=10,
            missing_retry_seconds=1,
        )

    def start_node(self) -> ServingNode:
        node = ServingNode(self.settings(), timing=TIMING).start()
        wait_for(lambda: node.listener.connected, timeout=10)
        self.node = node
        self.reconnects_allowed = self.reconnects()
        return node

    def new_file(
        self, *, good: bool = True, in_place: bool = False, incoming: bool = False
    ) -> File:
        """A checkpoint in the model root, or (``incoming``) in a folder under it that no
        tier scans: only a message brings it."""
        order = len(self.files)
        torch.manual_seed(order)
        actor = SACActor()
        if not good:
            with torch.no_grad():
                actor.mean.weight[0, 0] = float("nan")
        folder = self.root / "incoming" if incoming else self.root
        folder.mkdir(exist_ok=True)
        path = folder / f"model_{order:03d}.pt"
        if in_place:
            staged = save_checkpoint(self.tmp / "staged.pt", actor)
            data = staged.path.read_bytes()
            with open(path, "wb") as fh:  # what `cp` does: one inode, written in two parts
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.3)
                fh.write(data[len(data) // 2 :])
        else:
            save_checkpoint(path, actor)
        time.sleep(0.002)  # distinct mtimes on coarse file systems
        made = File(path, file_sha256(path), good, order, scanned=not incoming)
        self.files.append(made)
        return made

    def newest_good(self) -> File | None:
        good = [f for f in self.files if f.good and f.scanned]
        return max(good, key=lambda f: f.order) if good else None

    def reconnects(self) -> float:
        assert self.node is not None
        value = self.node.metrics.registry.get_sample_value("fks_listener_reconnects_total")
        return value or 0.0

    def publish_raw(self, payload: bytes | str) -> None:
        self.client.publish(KEYS.channel, payload)

    def decided(self, file: File, *, fleet: bool = True) -> None:
        """The node swaps ``file`` in (the model it served becomes the previous one, even
        for the same file loaded again); with ``fleet``, :latest records it."""
        self.previous, self.expected = self.expected, file
        if fleet:
            self.fleet, self.fleet_bad = file, False

    def delivered(self, received: float) -> None:
        """Wait until the node's listener has read the message just published."""
        assert self.node is not None
        node = self.node
        wait_for(lambda: node.listener.counters["received_channel"] > received, timeout=5)

    def received(self) -> float:
        assert self.node is not None
        return self.node.listener.counters["received_channel"]

    def settle(self) -> None:
        assert self.node is not None
        node = self.node
        start = time.monotonic()
        wait_for(lambda: node.applier.wait_idle(0.05) and node.listener.connected, timeout=10)
        FIRED["_settle_ms"] += int((time.monotonic() - start) * 1e3)

    # -- set-up ----------------------------------------------------------------------------

    @initialize()
    def first_checkpoint(self) -> None:
        first = self.new_file()
        result = self.notifier.notify(first.path)
        assert result.sent
        self.fleet_version = result.notification.version  # type: ignore[union-attr]
        self.node = self.start_node()
        self.expected, self.fleet = first, first

    # -- rules: publishers -----------------------------------------------------------------

    @rule(new=st.booleans())
    def publish_versioned(self, new: bool) -> None:
        """The trainer announces a checkpoint (a new one, or an old one again) with the
        next version."""
        self.fired("publish_versioned")
        target = self.new_file() if new or len(self.files) < 2 else self.files[0]
        seen = self.received()
        result = self.notifier.notify(target.path)
        assert result.sent, result.reason
        self.delivered(seen)
        self.fleet_version = result.notification.version  # type: ignore[union-attr]
        if target.good:
            self.decided(target)

    @rule()
    def publish_bad(self) -> None:
        """The trainer announces a checkpoint with NaN weights: refused, nothing changes."""
        self.fired("publish_bad")
        bad = self.new_file(good=False)
        seen = self.received()
        result = self.notifier.notify(bad.path)
        assert result.sent
        self.delivered(seen)
        self.fleet_version = result.notification.version  # type: ignore[union-attr]
        self.fleet_bad = True

    @rule(via_cli=st.booleans(), pick=st.integers(0, 1000))
    def publish_forced(self, via_cli: bool, pick: int) -> None:
        """An operator forces any good checkpoint: raw `redis-cli PUBLISH … force` or the
        publisher (which allocates a new version)."""
        self.fired(f"publish_forced_{'raw' if via_cli else 'notifier'}")
        good = [f for f in self.files if f.good]
        target = good[pick % len(good)]
        seen = self.received()
        if via_cli:
            self.publish_raw(json.dumps({"model_path": str(target.path), "force": True}))
        else:
            result = self.notifier.notify(target.path, force=True)
            assert result.sent
            self.fleet_version = result.notification.version  # type: ignore[union-attr]
        self.delivered(seen)
        self.decided(target)

    @rule(newer=st.booleans())
    def publish_unversioned(self, newer: bool) -> None:
        """A bare `{"model_path": …}`: applied if the file is newer than the decision, a
        no-op if it names an older file."""
        self.fired(f"publish_unversioned_{'newer' if newer else 'older'}")
        seen = self.received()
        if newer:
            target = self.new_file()
            self.publish_raw(json.dumps({"model_path": str(target.path)}))
            self.delivered(seen)
            self.decided(target)
        else:
            assert self.expected is not None
            older = [f for f in self.files if f.order < self.expected.order]
            if older:
                self.publish_raw(json.dumps({"model_path": str(older[0].path)}))
                self.delivered(seen)

    @precondition(lambda self: self.fleet_version > 1)
    @rule(duplicate=st.booleans())
    def publish_stale_or_duplicate(self, duplicate: bool) -> None:
        """A trainer reuses a version: the one :latest holds, for another checkpoint, is
        refused (conflict); one at or below what the node serves is skipped by the node."""
        self.fired(f"publish_{'duplicate' if duplicate else 'stale'}")
        assert self.node is not None
        other = self.files[0]
        held = self.latest()
        served = self.node.holder.identity()
        assert served is not None
        if duplicate:
            if held is None or held.version == 0:
                return
            version = held.version
        else:
            version = served.version_floor
            if version < 1:
                return
        seen = self.received()
        result = self.notifier.notify(other.path, version=version)
        if held is not None and held.version == version and held.model_path != str(other.path):
            assert result.outcome == "conflict", result
        if result.sent:
            self.delivered(seen)

    @rule(poison=st.sampled_from(POISON))
    def publish_poison(self, poison: bytes) -> None:
        """Garbage on the channel: rejected, and the session lives on."""
        self.fired("publish_poison")
        before = self.reconnects()
        seen = self.received()
        self.publish_raw(poison)
        self.delivered(seen)
        self.settle()
        assert self.reconnects() == before, "a message ended the listener's session"

    @rule(refused=st.sampled_from(["outside_roots", "truncated"]))
    def publish_refused_high_version(self, refused: str) -> None:
        """A message the node refuses, with a version far above everything (a path outside
        the roots, or a truncated file): refused, and it leaves no version behind."""
        self.fired(f"publish_refused_{refused}")
        assert self.node is not None
        node, before = self.node, self.node.holder.highest_version
        version = before + 1000
        if refused == "outside_roots":
            path = "/etc/passwd"
        else:
            cut = self.tmp / "default" / f"cut_{len(self.files)}.pt"  # a root, not scanned
            cut.parent.mkdir(exist_ok=True)
            cut.write_bytes(self.files[0].path.read_bytes()[:1000])
            path = str(cut)
        seen = self.received()
        self.publish_raw(json.dumps({"model_path": path, "version": version}))
        self.delivered(seen)
        self.settle()
        assert node.holder.highest_version == before, "a refused message moved the order"

    @rule(incoming=st.booleans())
    def data_loss_races_an_allocation(self, incoming: bool) -> None:
        """Redis restarts without its data and a trainer with no memory of its own (a new
        process) announces a new checkpoint, its version allocated from nothing, before the
        node is back: the node serves it, under a version above what it applied when only
        the message brings it (``incoming``: the catch-up finds a :latest issued after its
        decision yet numbered at or below what it applied, and announces it again), or as
        its fallback found it on disk first."""
        self.fired(f"data_loss_races_an_allocation_{'incoming' if incoming else 'on_disk'}")
        assert self.node is not None
        node = self.node
        node.listener.stop()
        self.reconnects_allowed += 1
        self.redis.kill()
        for item in (self.tmp / "redis").iterdir():
            if item.name != "redis.log":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        self.redis.start()
        self.client = self.redis.client()
        made = self.new_file(incoming=incoming)
        if not incoming:
            # away from Redis, the node's fallback serves the new file from disk first
            wait_for(lambda: getattr(node.holder.current(), "sha256", None) == made.sha256, 10)
            self.decided(made, fleet=False)
        result = notify_checkpoint(made.path, redis_url=self.redis.url)
        assert result.sent and result.notification is not None, result.reason
        generation = node.holder.generation
        node.listener.start()
        wait_for(lambda: node.listener.connected, timeout=10)
        # issued after the node's decision, numbered at or below what it applied: announced
        # again above every version the node applied (its number may name another
        # checkpoint the fleet saw), and served; or, if the node applied nothing versioned,
        # served as it is
        wait_for(lambda: getattr(node.holder.current(), "sha256", None) == made.sha256, 10)
        self.settle()
        held = self.latest()
        assert held is not None and held.sha256 == made.sha256, held
        # an announcement the node published itself (the one above its versions) reaches it
        # over the channel like any other: idle applier or not, it may still be on the wire
        # (seen under pytest -n 2, 2026-12-07); the node must take it up within the wait
        version = held.version
        wait_for(lambda: getattr(node.holder.current(), "version", None) == version, 10)
        self.settle()
        assert self.latest() == held, "the fleet's decision moved while the node caught up"
        self.fleet_version = held.version
        if node.holder.generation > generation:
            self.decided(made)
        else:
            self.fleet, self.fleet_bad = made, False

    @precondition(lambda self: self.node is not None and self.fleet is not None)
    @rule()
    def replayed_ack(self) -> None:
        """The checkpoint :latest holds is announced again (same version, sha256 and path)
        while an `applied` ack of the earlier message is replayed before the node answers:
        the waiter reports what the node said of the new message, never the replay."""
        self.fired("replayed_ack")
        assert self.node is not None
        held, raw = self.latest(), self.client.get(KEYS.latest)
        if held is None or raw is None or held.version == 0 or held.force:
            return
        node_id = self.node.node_id
        replay = Ack(
            node=node_id,
            version=held.version,
            sha256=held.sha256,
            model_path=held.model_path,
            outcome="applied",
            reason="REPLAYED",
            answers=answer_digest(raw),
        )
        seen = self.received()
        with AckWaiter(self.notifier.client(), KEYS) as waiter:
            self.client.publish(KEYS.acks, replay.to_json())
            sent = self.notifier.notify(held.model_path, version=held.version, sha256=held.sha256)
            assert sent.notification is not None, sent.reason
            report = waiter.collect(
                answers=answer_digest(sent.notification.to_json()),
                wait_for="all",
                expected=(node_id,),
                timeout=5,
            )
        self.delivered(seen)
        ack = report.ack_of(node_id)
        assert ack is not None and ack.reason != "REPLAYED", report
        if ack.outcome == "applied":  # newer than an unversioned decision: a decision
            target = next((f for f in self.files if str(f.path) == held.model_path), None)
            if target is not None:
                self.decided(target)

    @precondition(
        lambda self: (
            self.node is not None
            and self.fleet is not None
            and not self.fleet_bad
            and self.fleet == self.expected
        )
    )
    @rule()
    def rollout_with_errors_in_its_last_second(self) -> None:
        """`fks rollout` with this node as its canary: requests succeed through the soak but
        for its last half second, where half of them fail. The soak judges that half second
        too (the canary reports while it is one, and the soak waits for a report made after
        its end): rolled back to the fleet's decision, and the rollback acked applied."""
        self.fired("rollout_errors_in_last_second")
        assert self.node is not None
        node, fleet = self.node, self.fleet
        held = self.latest()
        if held is None or held.model_path != str(fleet.path):  # type: ignore[union-attr]
            return
        wait_for(lambda: self.client.hexists(KEYS.nodes, node.node_id), timeout=5)  # live
        canary = self.new_file()
        outcome: list[RolloutResult] = []
        plan = RolloutPlan(canary=1, soak=1.5, max_error_rate=0.1, timeout=5)
        thread = threading.Thread(
            target=lambda: outcome.append(
                run_rollout(self.notifier, str(canary.path), plan, say=lambda _: None)
            )
        )
        thread.start()
        wait_for(lambda: getattr(node.holder.current(), "sha256", None) == canary.sha256, 10)
        generation = node.holder.generation
        applied = time.monotonic()
        while thread.is_alive():
            late = time.monotonic() - applied > plan.soak - 0.5
            node.traffic.served(generation, error=late and node.traffic.requests % 2 == 0)
            time.sleep(0.005)
        thread.join()
        (result,) = outcome
        assert result.outcome == "rolled_back", (result.outcome, result.reason)
        assert "error rate" in result.reason, result.reason
        self.previous, self.expected = canary, fleet  # :latest never moved (a canary)

    # -- rules: operators ------------------------------------------------------------------

    @rule()
    def rollback(self) -> None:
        """POST /sac/model/rollback: the previous model back, at once; never a toggle."""
        self.fired("rollback")
        assert self.node is not None
        start = time.monotonic()
        try:
            self.node.holder.rollback()
        except NoPreviousModel:
            assert self.previous is None, "a previous model was kept but not restored"
            return
        finally:
            assert time.monotonic() - start < 1.0, "rollback waited"
        assert self.previous is not None, "rolled back although nothing was kept"
        self.expected, self.previous = self.previous, None

    @rule()
    def reload(self) -> None:
        """POST /sac/model/reload: the newest file on disk, if it verifies."""
        self.fired("reload")
        assert self.node is not None
        newest = max((f for f in self.files if f.scanned), key=lambda f: f.order)
        try:
            self.node.holder.reload()
        except Exception:  # noqa: BLE001 - a bad newest file: the old model stays
            assert not newest.good
            return
        assert newest.good
        self.decided(newest, fleet=False)

    # -- rules: faults ---------------------------------------------------------------------

    @rule()
    def kill_listener_connection(self) -> None:
        """CLIENT KILL TYPE pubsub: the listener reconnects and catches up; nothing changes."""
        self.fired("kill_listener_connection")
        assert self.node is not None
        node, sessions = self.node, self.node.listener.sessions
        self.reconnects_allowed += 1
        self.client.client_kill_filter(_type="pubsub")
        wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, 10)

    @rule(keep_data=st.booleans())
    def restart_redis(self, keep_data: bool) -> None:
        """kill -9 and start again, with its AOF or having lost everything."""
        self.fired(f"restart_redis_{'with' if keep_data else 'without'}_data")
        assert self.node is not None
        node, sessions = self.node, self.node.listener.sessions
        self.reconnects_allowed += 1
        self.redis.kill()
        if not keep_data:
            for item in (self.tmp / "redis").iterdir():
                if item.name != "redis.log":
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        self.redis.start()
        self.client = self.redis.client()
        wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, 10)
        if not keep_data:
            # the node put its decision back into the empty :latest if a message made it
            assert self.node is not None
            model = self.node.holder.current()
            restored = model is not None and model.message is not None
            self.fleet = self.expected if restored else None
            self.fleet_bad = False

    @rule(in_place=st.booleans())
    def outage_with_new_checkpoint(self, in_place: bool) -> None:
        """Redis goes away; a checkpoint is written (atomically, or in place as `cp` does);
        the fallback serves it; Redis returns and the node announces it."""
        self.fired(f"outage_{'in_place' if in_place else 'atomic'}")
        assert self.node is not None
        node = self.node
        self.reconnects_allowed += 1
        self.redis.kill()
        wait_for(lambda: not node.listener.connected, timeout=5)
        made = self.new_file(in_place=in_place)
        try:
            wait_for(lambda: getattr(node.holder.current(), "sha256", None) == made.sha256, 10)
        except AssertionError:
            events = [(e.kind, e.reason, e.source, e.path) for e in node.holder.events.recent(8)]
            raise AssertionError(
                f"the fallback did not serve {made.path}: {events}, {node.applier.counters}, "
                f"served {node.holder.identity()}, mtime {made.path.stat().st_mtime_ns}"
            ) from None
        latest_known = self.fleet is not None or self.fleet_bad
        sessions = node.listener.sessions
        self.redis.start()
        self.client = self.redis.client()
        wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, 10)
        self.decided(made, fleet=False)
        if latest_known:  # the node announces what it served meanwhile, then applies it
            wait_for(lambda: self.latest_path() == str(made.path), timeout=10)
            raw = self.client.get(KEYS.latest)
            assert raw is not None
            self.fleet_version = CheckpointNotification.from_message(raw).version
            wait_for(lambda: getattr(node.holder.current(), "version", 0) == self.fleet_version)
            self.decided(made)

    def latest(self) -> CheckpointNotification | None:
        raw = self.client.get(KEYS.latest)
        return None if raw is None else CheckpointNotification.from_message(raw)

    def latest_path(self) -> str | None:
        held = self.latest()
        return None if held is None else held.model_path

    @rule()
    def write_without_notify(self) -> None:
        """A file appears while Redis is up, unannounced: Redis mode ignores the disk."""
        self.fired("write_without_notify")
        self.new_file()

    @precondition(lambda self: self.node is not None)
    @rule()
    def restart_node(self) -> None:
        """The node restarts: it serves the fleet's decision (a per-node rollback or reload
        is gone), or the newest good file when Redis holds none it can serve."""
        self.fired("restart_node")
        assert self.node is not None
        self.settle()
        self.node.stop()
        self.node = self.start_node()
        target = self.fleet if self.fleet is not None and not self.fleet_bad else None
        self.expected = target or self.newest_good()
        self.previous = None

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def serves_the_latest_decision(self) -> None:
        if self.node is None:
            return
        self.settle()
        node, expected = self.node, self.expected
        assert expected is not None

        def matches() -> bool:
            model = node.holder.current()
            return model is not None and model.sha256 == expected.sha256

        try:
            wait_for(matches, timeout=5)
        except AssertionError:
            model = node.holder.current()
            events = [(e.kind, e.reason, e.source, e.path) for e in node.holder.events.recent(8)]
            raise AssertionError(
                f"serves {model.path if model else None}, expected {expected.path}; events {events}"
            ) from None
        RUNS["steps_checked"] += 1

    @invariant()
    def never_serves_a_refused_file(self) -> None:
        if self.node is None:
            return
        bad = {str(f.path) for f in self.files if not f.good}
        served = {str(g["path"]) for g in self.node.holder.history()}
        assert not bad & served, f"served a refused file: {bad & served}"

    @invariant()
    def sessions_end_only_when_killed(self) -> None:
        if self.node is not None:
            assert self.reconnects() <= self.reconnects_allowed

    @invariant()
    def versions_are_monotonic_and_unique(self) -> None:
        if self.node is None or not self.node.listener.connected:
            return
        model = self.node.holder.current()
        if model is None:
            return
        counter = self.client.get(KEYS.version)
        if counter is not None and model.version > 0:
            assert int(counter) >= model.version, (counter, model.version)
        if model.message is not None and model.version > 0:
            seen = self.versions.setdefault(model.version, model.sha256)
            assert seen == model.sha256, f"version {model.version} names two checkpoints"

    def teardown(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.notifier.close()
        self.client.close()
        self.redis.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        record(
            "model-based test of a node",
            examples=RUNS["examples"],
            steps_checked=RUNS["steps_checked"],
            rules_fired=sum(v for k, v in FIRED.items() if not k.startswith("_")),
            violations=0,
            by_rule={k: v for k, v in sorted(FIRED.items()) if not k.startswith("_")},
        )


NodeMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("FKS_MODEL_SEED") is None,
)
TestNodeModel = pytest.mark.timeout(60 + 3 * EXAMPLES * STEPS)(NodeMachine.TestCase)
