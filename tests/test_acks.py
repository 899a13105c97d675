"""Acks (SPEC §11): every judged notification is acked on fks:<instance>:acks, the registry
entry is rewritten at once, and targeted messages reach only the nodes they name."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from common import RedisKeys
from common.ack import Ack
from fks.redis_server import free_port
from publisher import CheckpointNotifier
from subscriber import ServingNode
from subscriber.pipeline.acker import Acker
from subscriber.runtime.metrics import Metrics
from tests.helpers import repeating, wait_for, write_checkpoint

KEYS = RedisKeys("default")


class AckTap:
    """Every ack published on the channel, collected by a thread of its own."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(KEYS.acks)
        self.acks: list[Ack] = []
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.05)
            except redis.ConnectionError:  # a test killed every pub/sub connection
                self.pubsub = self.client.pubsub()
                self.pubsub.subscribe(KEYS.acks)
                continue
            if message is not None and message["type"] == "message":
                self.raw.append(message["data"])
                ack = Ack.parse(message["data"])
                assert ack is not None, message["data"]
                self.acks.append(ack)

    def of(self, node: str, version: int) -> list[Ack]:
        return [a for a in self.acks if a.node == node and a.version == version]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()
        self.client.close()


@dataclass(frozen=True)
class Rig:
    """A test's Redis (its URL and a client), its model root, and its nodes."""

    url: str
    redis: redis.Redis
    root: Path
    start: Callable[..., ServingNode]

    def node(self, **settings: Any) -> ServingNode:
        """A serving node on this Redis (``node_id=...`` and any other setting)."""
        return self.start(self.url, **settings)


@pytest.fixture
def rig(
    redis_url: str,
    redis_client: redis.Redis,
    start_node: Callable[..., ServingNode],
    model_root: Path,
) -> Rig:
    return Rig(redis_url, redis_client, model_root, start_node)


@pytest.fixture
def tap(redis_url: str) -> Iterator[AckTap]:
    t = AckTap(redis_url)
    time.sleep(0.05)  # subscribed before anything is published
    yield t
    t.close()


def flooding(client: redis.Redis, *messages: str) -> AbstractContextManager[None]:
    """While inside, a thread publishes ``messages`` on the acks channel over and over."""

    def publish() -> None:
        for message in messages:
            client.publish(KEYS.acks, message)

    return repeating(publish, pause=0.001)


def entry(client: redis.Redis, node: str) -> dict[str, Any]:
    raw = client.hget(KEYS.nodes, node)
    return json.loads(raw) if raw else {}


def test_every_outcome_is_acked_and_the_registry_follows_at_once(
    rig: Rig,
    tap: AckTap,
) -> None:
    """applied, stale, rejected (with its reason) and a message that is not JSON: one ack
    each, carrying the message's version, sha256 and path; the registry entry (heartbeat
    every 60 s) already shows the new version when the applied ack arrives."""
    node = rig.node(node_id="n1", heartbeat_seconds=60)
    wait_for(lambda: node.listener.connected, timeout=5)
    wait_for(lambda: entry(rig.redis, "n1"), timeout=5)
    v2, v1 = write_checkpoint(rig.root, 2), write_checkpoint(rig.root, 1)
    with CheckpointNotifier(rig.url) as notifier:
        assert notifier.notify(v2.path, version=2)
        wait_for(lambda: tap.of("n1", 2), timeout=5)
        applied = tap.of("n1", 2)[0]
        assert applied.outcome == "applied" and applied.reason == "swapped"
        assert applied.sha256 == v2.sha256 and applied.model_path == str(v2.path)
        assert applied.generation == node.holder.generation and applied.ms > 0
        # the entry was rewritten before the ack was sent, not on the 60 s heartbeat
        assert entry(rig.redis, "n1")["version"] == 2

        assert notifier.notify(v1.path, version=1)
        wait_for(lambda: tap.of("n1", 1), timeout=5)
        assert (tap.of("n1", 1)[0].outcome, tap.of("n1", 1)[0].reason) == (
            "stale",
            "stale_version",
        )
        assert notifier.notify(v1.path, version=3, sha256="0" * 64)
        wait_for(lambda: tap.of("n1", 3), timeout=5)
        bad = tap.of("n1", 3)[0]
        assert (bad.outcome, bad.reason, bad.sha256) == ("rejected", "sha256_mismatch", "0" * 64)
    rig.redis.publish(KEYS.channel, "not json {")
    wait_for(lambda: any(a.reason == "not_json" for a in tap.acks), timeout=5)
    garbage = next(a for a in tap.acks if a.reason == "not_json")
    assert garbage.outcome == "rejected" and garbage.version is None and garbage.node == "n1"
    assert node.holder.current() is not None and node.holder.current().version == 2  # type: ignore[union-attr]
    for raw in tap.raw:
        assert set(json.loads(raw)) == {
            "node", "version", "sha256", "model_path", "outcome", "reason", "generation",
            "ms", "at", "answers",
        }  # fmt: skip
    # each ack names the exact bytes it judged: the garbage's too
    assert garbage.answers == hashlib.sha256(b"not json {").hexdigest()


def test_a_targeted_message_reaches_only_its_nodes_and_never_latest(
    rig: Rig,
    tap: AckTap,
) -> None:
    """Sent to n1 only: n1 applies it, n2 acks `ignored` and keeps its model, :latest keeps
    the fleet's decision (publisher and n1's record both leave it), and a node started
    afterwards catches up on the fleet's version, not the canary."""
    v1, v2 = write_checkpoint(rig.root, 1), write_checkpoint(rig.root, 2)
    with CheckpointNotifier(rig.url) as notifier:
        assert notifier.notify(v1.path, version=1)
    n1 = rig.node(node_id="n1", heartbeat_seconds=0.3)
    n2 = rig.node(node_id="n2", heartbeat_seconds=0.3)
    for n in (n1, n2):
        wait_for(lambda n=n: n.holder.current() is not None and n.listener.connected)  # type: ignore[misc]
    before = rig.redis.get(KEYS.latest)
    with CheckpointNotifier(rig.url) as notifier:
        result = notifier.notify(v2.path, version=2, nodes=["n1"], wait_for="all", timeout=5)
    assert result.sent and not result.latest_updated
    assert result.acks is not None and result.acks.ok, result.acks
    assert result.acks.ack_of("n1").outcome == "applied"  # type: ignore[union-attr]
    assert result.acks.ack_of("n2").outcome == "ignored"  # type: ignore[union-attr]
    assert n1.holder.current().version == 2  # type: ignore[union-attr]
    assert n2.holder.current().version == 1  # type: ignore[union-attr]
    n1.applier.wait_idle(2)
    assert rig.redis.get(KEYS.latest) == before
    assert not any(key.startswith("record_") for key in n1.applier.counters)
    # and the RECORD script itself refuses a targeted message (defence in depth)
    assert n1.recorder is not None and result.notification is not None
    raw = result.notification.to_json()
    assert (
        n1.recorder._script("record")(keys=[KEYS.latest, KEYS.version], args=[raw, "", "2", ""])
        == -2
    )
    n3 = rig.node(node_id="n3", heartbeat_seconds=0.3)
    assert n3.holder.current().version == 1  # type: ignore[union-attr]
    # n1 reconnects (its connection killed): it keeps the canary, and puts nothing in :latest
    rig.redis.client_kill_filter(_type="pubsub")
    wait_for(lambda: n1.listener.sessions >= 2, timeout=5)
    assert n1.holder.current().version == 2  # type: ignore[union-attr]
    assert rig.redis.get(KEYS.latest) == before


def test_unknown_target_ids_are_named_in_a_warning(
    rig: Rig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ids of `nodes` that no live node has are warned about by name and returned."""
    rig.node(node_id="n1", heartbeat_seconds=0.3)
    saved = write_checkpoint(rig.root, 1)
    with CheckpointNotifier(rig.url) as notifier:
        result = notifier.notify(saved.path, version=1, nodes=["n1", "ghost-7", "ghost-8"])
    assert result.sent and result.unknown_nodes == ("ghost-7", "ghost-8")
    assert any("ghost-7, ghost-8" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "nodes",
    [[], ["a b"], ["x" * 129], [f"n{i}" for i in range(257)], ["n1\n"], "n1", [7]],
    ids=["empty", "space", "too-long", "too-many", "newline", "not-a-list", "not-a-string"],
)
def test_hostile_target_lists_are_rejected_with_a_reason(
    rig: Rig,
    tap: AckTap,
    nodes: object,
) -> None:
    """A `nodes` field that is not a bounded list of valid ids is refused by the node
    (acked `rejected`, counted as invalid_field), the served model untouched; the publisher
    refuses to send one (ValueError)."""
    incoming = rig.root / "incoming"  # not scanned: nothing is served unless announced
    incoming.mkdir()
    saved = write_checkpoint(incoming, 1)
    node = rig.node(node_id="n1", heartbeat_seconds=0.3)
    wait_for(lambda: node.listener.connected)
    rig.redis.publish(KEYS.channel, json.dumps({"model_path": str(saved.path), "nodes": nodes}))
    wait_for(lambda: tap.acks, timeout=5)
    assert (tap.acks[0].outcome, tap.acks[0].reason) == ("rejected", "invalid_field")
    assert node.listener.counters["rejected_invalid_field"] == 1
    assert node.holder.current() is None
    if isinstance(nodes, list):
        with CheckpointNotifier(rig.url) as notifier, pytest.raises(ValueError):
            notifier.notify(saved.path, nodes=nodes)


def test_acks_never_block_the_applier_when_redis_is_gone() -> None:
    """With Redis unreachable, acks are dropped and counted, and ack() returns at once even
    when the queue is full."""
    metrics = Metrics()
    acker = Acker(
        f"redis://127.0.0.1:{free_port()}/0", KEYS, metrics, max_pending=4, timeout=0.2
    ).start()
    try:
        start = time.monotonic()
        for i in range(100):
            acker.ack(Ack(node="n1", outcome="applied", version=i))
        queued = time.monotonic() - start
        wait_for(lambda: acker.dropped == 100, timeout=10)
    finally:
        acker.stop()
    assert acker.sent == 0
    assert metrics.acks_dropped._value.get() == 100
    assert queued < 1.0, "ack() must not wait for Redis"


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "n\n1", "ünï", "a/b"])
def test_a_node_id_that_no_message_could_name_is_refused_at_start(bad: str) -> None:
    """FKS_NODE_ID outside [A-Za-z0-9_.:@-]{1,128} is a clear ValueError: a node that no
    targeted message could name, or whose acks would not parse, never starts."""
    from common.settings import Settings

    with pytest.raises(ValueError, match="node id"):
        Settings(node_id=bad)


def test_junk_and_forged_acks_do_not_confuse_a_waiting_publisher(
    rig: Rig,
) -> None:
    """While the publisher waits, the acks channel also carries garbage, an oversized blob
    and acks of another message: only the acks of its own message count."""
    node = rig.node(node_id="n1", heartbeat_seconds=0.3)
    wait_for(lambda: node.listener.connected and entry(rig.redis, "n1"))
    saved = write_checkpoint(rig.root, 5)
    other = Ack(node="n1", outcome="rejected", reason="forged", version=4).to_json()
    junk = ("{", "[]", "x" * 20000, '{"node":"n 1","outcome":"applied"}', other)
    with flooding(rig.redis, *junk), CheckpointNotifier(rig.url) as notifier:
        result = notifier.notify(saved.path, version=5, wait_for="all", timeout=5)
    assert result.acks is not None and result.acks.ok, result.acks
    assert [(a.node, a.outcome, a.version) for a in result.acks.acks] == [("n1", "applied", 5)]


def test_with_a_secret_only_signed_acks_count(
    rig: Rig,
    tap: AckTap,
) -> None:
    """FKS_NOTIFY_SECRET: the node signs its acks; a waiting publisher holding the secret
    ignores a flood of unsigned and wrongly signed acks claiming the node rejected it."""
    node = rig.node(node_id="n1", heartbeat_seconds=0.3, notify_secret="s3cret")
    wait_for(lambda: node.listener.connected and entry(rig.redis, "n1"))
    saved = write_checkpoint(rig.root, 5)
    forged = Ack(node="n1", outcome="rejected", reason="forged", version=5, sha256=saved.sha256,
                 model_path=str(saved.path))  # fmt: skip
    unsigned, wrongly_signed = forged.to_json(), forged.signed("wrong").to_json()
    with (
        flooding(rig.redis, unsigned, wrongly_signed),
        CheckpointNotifier(rig.url, secret="s3cret") as notifier,
    ):
        result = notifier.notify(saved.path, version=5, wait_for="all", timeout=5)
    assert result.acks is not None and result.acks.ok, result.acks
    (ack,) = result.acks.acks
    assert (ack.outcome, ack.reason) == ("applied", "swapped") and ack.signature is not None

    def signed() -> list[bytes]:  # the tap reads on its own thread, behind the flood
        return [raw for raw in tap.raw if b'"reason":"swapped"' in raw]

    wait_for(signed, timeout=10)
    assert Ack.parse(signed()[0], secret="s3cret") is not None
    assert Ack.parse(forged.to_json(), secret="s3cret") is None


def test_a_wait_whose_connection_is_killed_resumes_and_reads_what_it_missed(
    rig: Rig,
) -> None:
    """f3: CLIENT KILL of the waiting publisher's pub/sub connection, then the node acks
    while nobody listens. The wait subscribes again within its timeout and reads the ack back
    from the node's registry entry: complete, the node's outcome known, the cut counted."""
    from common.ack import answer_digest
    from publisher.acks import AckWaiter

    write_checkpoint(rig.root, 1)
    rig.node(node_id="n1")
    wait_for(lambda: rig.redis.hget(KEYS.nodes, "n1"), timeout=5)
    v2 = write_checkpoint(rig.root, 2, name="model_2_new.pt")
    with CheckpointNotifier(rig.url) as notifier:
        before = {int(c["id"]) for c in rig.redis.client_list()}
        with AckWaiter(notifier.client(), KEYS) as waiter:
            (mine,) = [c for c in rig.redis.client_list()
                       if int(c["id"]) not in before and c.get("sub") == "1"]  # fmt: skip
            rig.redis.client_kill_filter(_id=mine["id"])
            sent = notifier.notify(v2.path, version=2)
            assert sent.notification is not None
            wait_for(lambda: (entry(rig.redis, "n1").get("version")) == 2, timeout=5)
            report = waiter.collect(
                answers=answer_digest(sent.notification.to_json()),
                wait_for="all",
                expected=("n1",),
                timeout=5,
            )
    assert report.complete and report.cuts == 1 and not report.cut
    (ack,) = report.acks
    assert (ack.node, ack.outcome, ack.reason, ack.version) == ("n1", "applied", "swapped", 2)
    assert report.seconds < 5


def test_a_refused_message_does_not_end_a_canary_s_fast_reports(
    rig: Rig,
) -> None:
    """x11: a canary (it judged a message targeted at it) writes its entry every 0.25 s
    until it judges a message for every node; a message it refuses (garbage, a replay) does
    not end that, so a soak keeps seeing a dead canary within a second."""
    write_checkpoint(rig.root, 1)
    node = rig.node(node_id="n1")
    wait_for(lambda: node.listener.connected, timeout=5)
    with CheckpointNotifier(rig.url) as notifier:
        canary = write_checkpoint(rig.root, 2, name="model_2_canary.pt")
        assert notifier.notify(canary.path, version=2, nodes=["n1"], wait_for=1).sent
        wait_for(lambda: node.registry.watched, timeout=5)
        rig.redis.publish(KEYS.channel, "not json {")
        old = notifier.notify(rig.root / "model_1.pt", version=1, wait_for=1)  # stale
        assert old.acks is not None and old.acks.acks[0].reason == "stale_version"
        wait_for(lambda: node.listener.counters["rejected_not_json"] == 1, timeout=5)
        assert node.registry.watched
        promoted = notifier.notify(canary.path, version=2, wait_for="all")  # the promotion
        assert promoted.acks is not None and promoted.acks.acks[0].outcome == "stale"
    wait_for(lambda: not node.registry.watched, timeout=5)


def test_an_ack_that_fails_ends_neither_the_session_nor_the_swap(
    rig: Rig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The acker raising on every ack (refused garbage on the listener, a swap on the
    applier): the session stays up, the checkpoint is served, the failure is logged."""
    node = rig.node(node_id="n1")
    wait_for(lambda: node.listener.connected, timeout=5)
    assert node.acker is not None
    sessions = node.listener.sessions

    def broken(ack: Ack) -> None:
        raise RuntimeError("the acker is broken")

    monkeypatch.setattr(node.acker, "ack", broken)
    rig.redis.publish(KEYS.channel, "not json {")
    wait_for(lambda: node.listener.counters["rejected_not_json"] == 1, timeout=5)
    saved = write_checkpoint(rig.root / "incoming", 1)
    with CheckpointNotifier(rig.url) as notifier:
        assert notifier.notify(saved.path, version=1).sent
    wait_for(lambda: getattr(node.holder.current(), "version", None) == 1, timeout=5)
    assert node.listener.connected and node.listener.sessions == sessions
    assert node.applier.counters["apply_errors"] == 0


def test_a_name_over_the_file_systems_limit_is_acked_and_spoils_no_batch(
    rig: Rig, tap: AckTap
) -> None:
    """A path whose file name is over 255 bytes (ENAMETOOLONG from the file system) and a
    valid notification, published back to back: the first is acked rejected with the
    reason, the second applied; the applier never fails."""
    node = rig.node(node_id="n1")
    wait_for(lambda: node.listener.connected, timeout=5)
    good = write_checkpoint(rig.root / "incoming", 5)
    long = {"model_path": str(rig.root / ("a" * 300 + ".pt")), "version": 9, "sha256": "a" * 64}
    valid = {"model_path": str(good.path), "version": 5, "sha256": good.sha256}
    pipe = rig.redis.pipeline(transaction=False)
    pipe.publish(KEYS.channel, json.dumps(long))
    pipe.publish(KEYS.channel, json.dumps(valid))
    pipe.execute()
    wait_for(lambda: tap.of("n1", 9) and tap.of("n1", 5), timeout=5)
    (refused,) = tap.of("n1", 9)
    assert (refused.outcome, refused.reason) == ("rejected", "unreadable")
    assert tap.of("n1", 5)[0].outcome == "applied"
    assert getattr(node.holder.current(), "version", None) == 5
    assert node.applier.counters["apply_errors"] == 0


@pytest.mark.parametrize("third", ["targeted", "raw_unversioned"])
def test_a_retried_rollback_never_moves_latest_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, third: str
) -> None:
    """An operator's raw forced W whose file lags, then the trainer's D (in :latest), then a
    canary or a raw unversioned E, all while the node loads v2: their retries come back as
    one batch, in arrival order, and W (the one whose file appeared) is applied. W was
    published before D: its record must not replace D in :latest."""
    incoming, staging = rig.root / "incoming", tmp_path / "staging"
    v1, v2 = (
        write_checkpoint(incoming, 1, name="v1.pt"),
        write_checkpoint(incoming, 2, name="v2.pt"),
    )
    w = write_checkpoint(staging, 3, name="w.pt")  # moved into place after its first try
    w_path, d_path, e_path = (incoming / f"{n}.pt" for n in ("w", "d", "e"))
    node = rig.node(node_id="n1")
    wait_for(lambda: node.listener.connected, timeout=5)
    prepare = node.holder.prepare
    gate, loading = threading.Event(), threading.Event()

    def slow(located: Any, **kw: Any) -> Any:
        path = str(located.real or located.candidate.path)
        if path == str(v2.path):
            loading.set()
            gate.wait(5)
        try:
            return prepare(located, **kw)
        except Exception:
            if path == str(w_path) and not w_path.exists():
                os.rename(w.path, w_path)  # W's file lands right after its first try
            raise

    monkeypatch.setattr(node.holder, "prepare", slow)
    with CheckpointNotifier(rig.url) as notifier:
        assert notifier.notify(v1.path, version=1).sent
        wait_for(lambda: getattr(node.holder.current(), "path", None) == v1.path, timeout=5)
        assert notifier.notify(v2.path, version=2).sent  # a slow load: a batch forms
        assert loading.wait(5)
        rig.redis.publish(KEYS.channel, json.dumps({"model_path": str(w_path), "force": True}))
        assert notifier.notify(d_path, version=5).sent  # after W: :latest = D
        raw_d = rig.redis.get(KEYS.latest)
        if third == "targeted":
            assert notifier.notify(e_path, version=6, nodes=["n1"]).sent
        else:
            rig.redis.publish(KEYS.channel, json.dumps({"model_path": str(e_path)}))
        time.sleep(0.03)
        gate.set()
    wait_for(lambda: getattr(node.holder.current(), "path", None) == w_path, timeout=5)
    node.applier.wait_idle(2)
    assert rig.redis.get(KEYS.latest) == raw_d


def test_a_node_whose_storage_lags_leaves_the_fleet_decision_in_latest(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n0 sees every file and serves the trainer's D (published after the operator's raw
    forced W); n1's storage lags for W, D and E, and once W's file is there it serves W.
    Its record does not replace D in :latest: a node started later serves D, as n0 does."""
    from common.errors import CheckpointLoadError

    incoming = rig.root / "incoming"
    names = ("v1", "v2", "w", "d", "e")
    v1, v2, w, d, e = (write_checkpoint(incoming, i, name=f"{n}.pt") for i, n in enumerate(names))
    n0, n1 = rig.node(node_id="n0"), rig.node(node_id="n1")
    wait_for(lambda: n0.listener.connected and n1.listener.connected, timeout=5)
    prepare = n1.holder.prepare
    gate, loading = threading.Event(), threading.Event()
    lagging = {str(w.path): 1, str(d.path): 99, str(e.path): 99}  # n1's view only

    def slow(located: Any, **kw: Any) -> Any:
        path = str(located.real or located.candidate.path)
        if path == str(v2.path):
            loading.set()
            gate.wait(5)
        if lagging.get(path, 0) > 0:
            lagging[path] -= 1
            raise CheckpointLoadError(f"{path}: no such file (lagging mount)", reason="missing")
        return prepare(located, **kw)

    def served(node: ServingNode) -> Path | None:
        return getattr(node.holder.current(), "path", None)

    monkeypatch.setattr(n1.holder, "prepare", slow)
    with CheckpointNotifier(rig.url) as notifier:
        assert notifier.notify(v1.path, version=1).sent
        wait_for(lambda: served(n1) == v1.path and served(n0) == v1.path, timeout=5)
        assert notifier.notify(v2.path, version=2).sent
        assert loading.wait(5)
        rig.redis.publish(KEYS.channel, json.dumps({"model_path": str(w.path), "force": True}))
        assert notifier.notify(d.path, version=5).sent
        raw_d = rig.redis.get(KEYS.latest)
        assert notifier.notify(e.path, version=6, nodes=["n1"]).sent
        time.sleep(0.03)
        gate.set()
    wait_for(lambda: served(n1) == w.path and served(n0) == d.path, timeout=5)
    n1.applier.wait_idle(2)
    late = rig.node(node_id="n2")
    assert rig.redis.get(KEYS.latest) == raw_d
    assert served(late) == d.path
