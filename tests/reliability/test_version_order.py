"""Issue 24, root (j): only an applied decision moves the order (c1, b1, d1).

Real ``redis-server`` processes (restarted without their data) and in-process
:class:`subscriber.ServingNode` s, whose listener a test stops and starts to hold a node away
from Redis exactly as long as a race needs (a node that is slower to reconnect than a
trainer is to publish). Each test asserts the good outcome.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from common import CheckpointNotification, RedisKeys
from common.checkpoint import SavedCheckpoint
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier, notify_checkpoint
from subscriber import ServingNode
from tests.helpers import heartbeats_held, served_version, wait_for, write_checkpoint

KEYS = RedisKeys("default")
StartNode = Callable[..., ServingNode]


def _latest(client: redis.Redis) -> CheckpointNotification | None:
    raw = client.get(KEYS.latest)
    return CheckpointNotification.from_message(raw) if raw else None


def test_a_refused_message_leaves_no_version_behind(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path
) -> None:
    """c1: a message naming a path outside the roots as v99 and a truncated file announced
    as v50 are refused, and leave nothing: after Redis restarts without its data while the
    node serves v4 from disk, the trainer's v5 (a file older on disk than v4: only the message
    brings it), announced before the node is back, is served as v5, and :version is 5 (not
    99)."""
    write_checkpoint(model_root, 1)
    node = start_node(volatile_redis.url, heartbeat_seconds=0.2)
    wait_for(lambda: node.listener.connected and served_version(node) == 1, timeout=10)
    client = volatile_redis.client()
    client.publish(KEYS.channel, json.dumps({"model_path": "/etc/passwd", "force": True,
                                             "version": 99}))  # fmt: skip
    truncated = model_root / "model_trunc.pt"
    truncated.write_bytes((model_root / "model_1.pt").read_bytes()[:1000])
    client.publish(KEYS.channel, json.dumps({"model_path": str(truncated), "version": 50}))
    wait_for(
        lambda: {"outside_roots", "truncated"} <= {e.reason for e in node.holder.events.recent()},
        timeout=5,
    )
    assert node.holder.highest_version == 1
    volatile_redis.kill()
    wait_for(lambda: not node.listener.connected, timeout=5)
    v4 = write_checkpoint(model_root, 4)
    wait_for(lambda: served_version(node) == 4, timeout=10)  # the mtime fallback
    node.listener.stop()  # the trainer is faster than the node's reconnect
    volatile_redis.start()
    v5 = write_checkpoint(model_root, 5, name="model_5_late.pt")
    old = v4.path.stat().st_mtime - 30
    os.utime(v5.path, (old, old))
    assert notify_checkpoint(v5.path, version=5, redis_url=volatile_redis.url).sent
    node.listener.start()
    wait_for(lambda: served_version(node) == 5, timeout=10)  # v5 itself: newer than all it applied
    assert int(volatile_redis.client().get(KEYS.version) or 0) == 5


@pytest.mark.parametrize("served", [3, 1])
def test_a_checkpoint_announced_after_redis_lost_its_data_is_served(
    volatile_redis: EmbeddedRedis,
    start_node: StartNode,
    model_root: Path,
    incoming: Path,
    served: int,
) -> None:
    """b1: the node serves v3 (or v1); Redis restarts without its data and the trainer's
    next notify_checkpoint (an allocated version: 1, the counter is gone) lands before the
    node is back. The node finds that Redis lost its data (the :epoch token it saw is gone;
    and for v3, the counter below what it served), takes the :latest published since as the
    newer decision and serves it; a node started afterwards serves it too, and the next
    allocated version is above everything."""
    write_checkpoint(model_root, 1)
    node = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n1")
    wait_for(lambda: node.listener.connected and served_version(node) == 1, timeout=10)
    if served == 3:
        v3 = write_checkpoint(incoming, 3)
        assert notify_checkpoint(v3.path, version=3, redis_url=volatile_redis.url).sent
        wait_for(lambda: served_version(node) == 3, timeout=10)
    node.listener.stop()  # away from Redis for as long as the race needs
    volatile_redis.kill()
    volatile_redis.start()
    new = write_checkpoint(incoming, 0, name="model_after_loss.pt")
    result = notify_checkpoint(new.path, redis_url=volatile_redis.url)
    assert result.sent and result.notification is not None
    assert result.notification.version == 1  # what a lost counter allocates
    node.listener.start()
    wait_for(lambda: node.holder.current() is not None
             and node.holder.current().sha256 == new.sha256, timeout=10)  # type: ignore[union-attr]  # fmt: skip
    # announced again above what the fleet knew: one version still names one checkpoint
    assert node.holder.current().version > served  # type: ignore[union-attr]
    later = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n2")
    wait_for(lambda: later.holder.current() is not None
             and later.holder.current().sha256 == new.sha256, timeout=10)  # type: ignore[union-attr]  # fmt: skip
    wait_for(lambda: int(volatile_redis.client().get(KEYS.version) or 0) >= served, timeout=5)
    following = write_checkpoint(incoming, 0, name="model_following.pt")
    with CheckpointNotifier(volatile_redis.url) as notifier:
        nxt = notifier.notify(following.path)
    assert nxt.notification is not None and nxt.notification.version > served
    wait_for(lambda: served_version(node) == nxt.notification.version, timeout=10)  # type: ignore[union-attr]


def _one_publication_behind(
    redis_server: EmbeddedRedis,
    start_node: StartNode,
    model_root: Path,
    incoming: Path,
    *,
    third: str,
    version: int | None,
) -> tuple[ServingNode, redis.Redis]:
    """Node n1 serves v1 from disk, then v2 and ``third`` (announced as ``version``, or
    allocated: 3) from messages; its listener is then stopped and Redis set back to the state
    after v2 (:latest v2, :version 2): what a replica one publication behind holds."""
    write_checkpoint(model_root, 1)
    node = start_node(redis_server.url, heartbeat_seconds=0.2, node_id="n1")
    wait_for(lambda: node.listener.connected, timeout=10)
    client = redis_server.client()
    v2, v3 = write_checkpoint(incoming, 2), write_checkpoint(incoming, 3, name=third)
    assert notify_checkpoint(v2.path, version=2, redis_url=redis_server.url).sent
    wait_for(lambda: served_version(node) == 2, timeout=10)
    behind = client.get(KEYS.latest)
    assert notify_checkpoint(v3.path, version=version, redis_url=redis_server.url).sent
    wait_for(lambda: served_version(node) == 3, timeout=10)
    node.listener.stop()
    client.set(KEYS.latest, behind or b"")
    client.set(KEYS.version, 2)
    return node, client


def test_a_publication_a_failover_lost_from_latest_is_put_back(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """d1 (its effect, on one server): the node heard v3, but the Redis it reconnects to holds
    :latest v2 and :version 2 (a replica promoted before v3 reached it). The node judges the
    catch-up older than its decision and puts v3 back into :latest, so a node started
    afterwards serves v3, not v2."""
    node, client = _one_publication_behind(
        volatile_redis, start_node, model_root, incoming, third="model_3.pt", version=3
    )
    node.listener.start()
    wait_for(lambda: (_latest(client) or CheckpointNotification(model_path="x")).version == 3,
             timeout=10)  # fmt: skip
    assert node.applier.counters["supersede_recorded"] == 1
    later = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n2")
    wait_for(lambda: served_version(later) == 3, timeout=10)
    assert served_version(node) == 3


def test_a_replica_a_publication_behind_and_a_trainer_faster_than_the_node(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """x10: the Redis the node comes back to holds the state of one publication earlier
    (:latest v2, :version 2, the same :epoch: a lagging replica), and a trainer with no
    memory of its own allocates v3 there for another checkpoint before the node is back. The
    node (on v3, the lost one) finds a :latest issued after its decision yet numbered at
    what it applied: announced again as v4, served by it and by a node started later; one
    version never names two checkpoints in the fleet."""
    node, _ = _one_publication_behind(
        volatile_redis, start_node, model_root, incoming, third="lost_3.pt", version=None
    )
    other = write_checkpoint(incoming, 0, name="other.pt")
    result = notify_checkpoint(other.path, redis_url=volatile_redis.url)
    assert result.notification is not None and result.notification.version == 3
    node.listener.start()
    wait_for(lambda: getattr(node.holder.current(), "sha256", None) == other.sha256, timeout=10)
    assert served_version(node) == 4
    later = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n2")
    wait_for(lambda: served_version(later) == 4, timeout=10)


def test_an_overwritten_counter_is_not_raised_again_by_the_nodes(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path
) -> None:
    """x3: a Redis writer sets :version to 2^64 - 1: allocations fail (loudly) until an
    operator repairs the key. The nodes raise :version on reconnect only to what they
    applied, never to what the counter once claimed: the repair sticks."""
    write_checkpoint(model_root, 1)
    node = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n1")
    wait_for(lambda: node.listener.connected and served_version(node) == 1, timeout=10)
    client = volatile_redis.client()
    client.set(KEYS.version, str(2**64 - 1))
    sessions = node.listener.sessions
    client.client_kill_filter(_type="pubsub")
    wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, timeout=10)
    stuck = notify_checkpoint(write_checkpoint(model_root, 0, name="a.pt").path,
                              redis_url=volatile_redis.url)  # fmt: skip
    assert not stuck.sent and "exhausted" in stuck.reason
    client.set(KEYS.version, 1)  # the operator's repair
    sessions = node.listener.sessions
    client.client_kill_filter(_type="pubsub")
    wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, timeout=10)
    assert int(client.get(KEYS.version) or 0) == 1
    fixed = notify_checkpoint(write_checkpoint(model_root, 0, name="b.pt").path,
                              redis_url=volatile_redis.url)  # fmt: skip
    assert fixed.sent and fixed.notification is not None and fixed.notification.version == 2
    wait_for(lambda: served_version(node) == 2, timeout=10)


def test_a_raw_decision_after_latest_was_refilled_is_recorded(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """A node that caught up on v2 at its start; Redis restarts without its data; the
    reconnecting node refills the empty :latest with its decision. A raw, unversioned
    `redis-cli PUBLISH` of a newer file is then applied and recorded in :latest (its
    compare-and-set knows the refill), so a node started later serves it too (found by the
    model-based test)."""
    write_checkpoint(model_root, 1)
    v2 = write_checkpoint(incoming, 2)
    assert notify_checkpoint(v2.path, version=2, redis_url=volatile_redis.url).sent
    node = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n1")  # catches up
    wait_for(lambda: node.listener.connected and served_version(node) == 2, timeout=10)
    sessions = node.listener.sessions
    volatile_redis.kill()
    volatile_redis.start()
    wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, timeout=10)
    client = volatile_redis.client()
    wait_for(lambda: (_latest(client) or CheckpointNotification(model_path="x")).version == 2, 5)
    newer = write_checkpoint(incoming, 0, name="newer.pt")
    client.publish(KEYS.channel, json.dumps({"model_path": str(newer.path)}))
    wait_for(lambda: getattr(node.holder.current(), "sha256", None) == newer.sha256, timeout=10)
    wait_for(lambda: getattr(_latest(client), "model_path", None) == str(newer.path), timeout=5)
    later = start_node(volatile_redis.url, heartbeat_seconds=0.2, node_id="n2")
    wait_for(lambda: getattr(later.holder.current(), "sha256", None) == newer.sha256, timeout=10)


def _serving_v3(
    redis_server: EmbeddedRedis,
    start_node: StartNode,
    model_root: Path,
    incoming: Path,
    secret: str | None = None,
) -> tuple[ServingNode, str]:
    """A node (heartbeat every 0.2 s) serving v1 from disk, then v3 announced: the node and
    v3's sha256, once Redis holds the node's :epoch token."""
    write_checkpoint(model_root, 1)
    node = start_node(redis_server.url, heartbeat_seconds=0.2, node_id="n1",
                      notify_secret=secret)  # fmt: skip
    wait_for(lambda: node.listener.connected and served_version(node) == 1, timeout=10)
    v3 = write_checkpoint(incoming, 3)
    with CheckpointNotifier(redis_server.url, secret=secret) as publisher:
        assert publisher.notify(v3.path, version=3).sent
    wait_for(lambda: served_version(node) == 3, timeout=10)
    client = redis_server.client()
    wait_for(lambda: client.exists(KEYS.epoch) == 1, timeout=5)
    client.close()
    beats = node.registry.beats
    wait_for(lambda: node.registry.beats >= beats + 2, timeout=5)  # one read the counter at 3
    return node, v3.sha256


@pytest.mark.parametrize("secret", [None, "s3cret-fleet-key"], ids=["unsigned", "signed"])
@pytest.mark.parametrize("how", ["flushall", "lru"])
def test_redis_losing_its_data_under_a_connected_node_loses_no_notification(
    volatile_redis: EmbeddedRedis,
    start_node: StartNode,
    model_root: Path,
    incoming: Path,
    how: str,
    secret: str | None,
) -> None:
    """The node serves v3 and stays subscribed while Redis loses its keys: an operator's
    FLUSHALL, or an LRU eviction (maxmemory) of the counter and :latest, which keeps :epoch
    (the heartbeat's reads keep it in use; seen with allkeys-lru). No reconnect tells the node.
    The trainer's next notify_checkpoint is allocated v1 (the counter is gone) and reaches
    the node as stale by its number; the node's heartbeat finds the :epoch token gone (or,
    after the eviction, the counter below what it saw), the node catches up as after a
    reconnect and puts its decision back into Redis, so the next allocation is above v3 and
    served. Unsigned, the checkpoint announced as v1 is served too (announced again above
    v3). Signed, it stays judged (acked stale): a signature is judged once, or a Redis
    writer could fake the loss and promote a stale message."""
    node, v3_sha256 = _serving_v3(volatile_redis, start_node, model_root, incoming, secret)
    publisher = CheckpointNotifier(volatile_redis.url, secret=secret)
    client = volatile_redis.client()
    sessions = node.listener.sessions
    new = write_checkpoint(incoming, 0, name="model_after_loss.pt")
    with heartbeats_held(node):  # the trainer publishes before the node's next look
        if how == "flushall":
            client.flushall()
        else:
            client.delete(KEYS.version, KEYS.latest)
        with CheckpointNotifier(volatile_redis.url, secret=secret) as trainer:  # a new process
            result = trainer.notify(new.path)
    assert result.sent and result.notification is not None
    assert result.notification.version == 1  # what a lost counter allocates
    wait_for(lambda: node.listener.counters["data_loss"] >= 1, timeout=10)
    if secret is None:
        wait_for(lambda: node.holder.current() is not None
                 and node.holder.current().sha256 == new.sha256, timeout=10)  # type: ignore[union-attr]  # fmt: skip
        assert node.holder.current().version > 3  # type: ignore[union-attr]
    wait_for(lambda: int(client.get(KEYS.version) or 0) >= 3, timeout=5)
    assert node.applier.wait_idle(5)
    if secret is not None:
        assert node.holder.current().sha256 == v3_sha256  # type: ignore[union-attr]
    assert node.listener.sessions == sessions  # found without a reconnect
    following = write_checkpoint(incoming, 0, name="model_following.pt")
    nxt = publisher.notify(following.path)
    assert nxt.notification is not None and nxt.notification.version > 3
    wait_for(lambda: served_version(node) == nxt.notification.version, timeout=10)  # type: ignore[union-attr]
    publisher.close()
    client.close()


def test_a_stale_message_judged_before_the_loss_is_not_taken_for_news_after_it(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """The attacker of the fix above: the node serves v3; a trainer announces another
    checkpoint as v2 (stale by its number, issued after v3); later a Redis writer puts that
    very message into :latest and deletes :epoch. The node finds the "loss", but the message
    was judged before Redis last held the token intact: it stays judged, nothing is
    announced again, v3 stays served."""
    node, v3_sha256 = _serving_v3(volatile_redis, start_node, model_root, incoming)
    client = volatile_redis.client()
    heard = client.pubsub(ignore_subscribe_messages=True)
    heard.subscribe(KEYS.channel)
    older = write_checkpoint(incoming, 2, name="model_older.pt", seed=21)
    assert notify_checkpoint(older.path, version=2, redis_url=volatile_redis.url).sent
    raw = b""
    deadline = time.monotonic() + 5
    while not raw and time.monotonic() < deadline:  # the message as it went out
        message = heard.get_message(timeout=0.1)
        raw = message["data"] if message else b""
    assert raw
    wait_for(lambda: node.listener.counters["received_channel"] >= 2, timeout=5)
    beats = node.registry.beats
    wait_for(lambda: node.registry.beats >= beats + 2, timeout=5)  # the token seen intact since
    client.set(KEYS.latest, raw)
    client.delete(KEYS.epoch)
    wait_for(lambda: node.listener.counters["data_loss"] >= 1, timeout=5)
    wait_for(lambda: client.exists(KEYS.epoch) == 1, timeout=5)  # put back by the node
    assert node.applier.wait_idle(5)
    assert node.holder.current().sha256 == v3_sha256  # type: ignore[union-attr]
    assert node.listener.counters["reannounced"] == 0
    assert node.listener.counters["already_judged"] >= 1
    heard.close()
    client.close()


def test_a_node_announces_again_only_what_latest_still_holds(redis_url: str) -> None:
    """The announcement again of a post-loss message is a compare-and-set on :latest: once a
    newer publication took its place (the node's applier was busy with a slow fetch
    meanwhile), nothing is published and :latest keeps the newer one; while :latest holds
    it still, it is announced above every version the node knows."""
    from common.notification import message_digest
    from subscriber.pipeline.recorder import Recorder

    client = redis.Redis.from_url(redis_url)
    heard = client.pubsub(ignore_subscribe_messages=True)
    heard.subscribe(KEYS.channel)
    recorder = Recorder(redis_url, KEYS)
    with CheckpointNotifier(redis_url) as trainer:
        x = trainer.notify("/models/x.pt", version=1, sha256="a" * 64).notification
        held = client.get(KEYS.latest)
        assert x is not None and held is not None
        y = trainer.notify("/models/y.pt", sha256="b" * 64).notification  # a newer one
    assert y is not None and y.version == 2
    newer = client.get(KEYS.latest)
    assert recorder.reannounce(x, message_digest(held), node_id="n1", floor=3) == "superseded"
    assert client.get(KEYS.latest) == newer
    assert recorder.reannounce(y, message_digest(newer or b""), node_id="n1", floor=3) == (
        "announced"
    )
    again = _latest(client)
    assert again is not None and again.model_path == "/models/y.pt" and again.version > 3
    published = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = heard.get_message(timeout=0.1)
        if message is not None:
            published.append(CheckpointNotification.from_message(message["data"]).model_path)
    assert published == ["/models/x.pt", "/models/y.pt", "/models/y.pt"]  # x never again
    recorder.close()
    heard.close()
    client.close()


def test_a_huge_epoch_costs_the_node_nothing_per_heartbeat(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path
) -> None:
    """A Redis writer sets :epoch to 32 MB. The node reads 64 bytes of it at each heartbeat
    (and in the catch-up and the restore): one loss is found (the token changed), then the
    node holds the new token and nothing more happens; Redis sends the node a few KB, not
    32 MB a beat."""
    write_checkpoint(model_root, 1)
    node = start_node(volatile_redis.url, heartbeat_seconds=0.1, node_id="n1")
    wait_for(lambda: node.listener.connected and served_version(node) == 1, timeout=10)
    client = volatile_redis.client()
    wait_for(lambda: client.exists(KEYS.epoch) == 1, timeout=5)
    client.set(KEYS.epoch, b"e" * (32 * 2**20))
    wait_for(lambda: node.listener.counters["data_loss"] == 1, timeout=5)
    sent = int(client.info("stats")["total_net_output_bytes"])
    beats = node.registry.beats
    wait_for(lambda: node.registry.beats >= beats + 10, timeout=10)
    assert int(client.info("stats")["total_net_output_bytes"]) - sent < 2**20
    assert node.listener.counters["data_loss"] == 1
    assert served_version(node) == 1
    client.close()


def test_a_publication_between_the_catch_up_and_the_restore_is_served(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """Unsigned, after a FLUSHALL: the node's catch-up reads X (allocated v1) from :latest
    and, before its restore raises the counter, the trainer announces Y (allocated v2). The
    node's announcement again of X finds :latest moved (its applier was busy: here it waits
    for the restore) and publishes nothing; the node reads :latest again and serves Y,
    announced again above every version. Found by the second review of the loss finding."""
    node, _ = _serving_v3(volatile_redis, start_node, model_root, incoming)
    client = volatile_redis.client()
    x = write_checkpoint(incoming, 0, name="x.pt", seed=31)
    y = write_checkpoint(incoming, 0, name="y.pt", seed=32)
    trainer = CheckpointNotifier(volatile_redis.url)
    restore, reannounce = node.listener._restore, node.recorder.reannounce  # type: ignore[union-attr]
    published: list[int] = []

    def restore_after_y() -> None:  # Y lands between the catch-up's read and the restore
        if node.listener.counters["data_loss"] >= 1 and not published:
            sent = trainer.notify(y.path).notification
            published.append(sent.version if sent else -1)
        restore()

    def reannounce_late(*args: object, **kwargs: object) -> str:  # a busy applier
        wait_for(lambda: published, timeout=5)
        time.sleep(0.3)
        return reannounce(*args, **kwargs)  # type: ignore[arg-type]

    node.listener._restore = restore_after_y  # type: ignore[method-assign]
    node.recorder.reannounce = reannounce_late  # type: ignore[method-assign,union-attr]
    with heartbeats_held(node):
        client.flushall()
        sent = trainer.notify(x.path).notification
    assert sent is not None and sent.version == 1
    wait_for(lambda: published == [2], timeout=10)
    wait_for(lambda: node.holder.current().sha256 == y.sha256, timeout=10)  # type: ignore[union-attr]
    assert node.holder.current().version > 3  # type: ignore[union-attr]
    assert node.applier.counters["reannounce_superseded"] == 1
    assert _latest(client).model_path == str(y.path)  # type: ignore[union-attr]
    trainer.close()
    client.close()


def test_an_unversioned_raw_message_raises_the_counter_to_the_version_it_is_served_under(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """An operator's raw unversioned PUBLISH is served under its file's version (142). The
    node records it in :latest and raises :version to 142, so the trainer's next checkpoint
    is v143: served by the running node and by a node started later. Before, it was v4,
    stale on every running node (for 138 checkpoints) while a node started later served it
    from :latest: a fleet split in two. Nothing is taken for a loss."""
    node, _ = _serving_v3(volatile_redis, start_node, model_root, incoming)
    client = volatile_redis.client()
    operator = write_checkpoint(incoming, 142, name="operator.pt", seed=41)
    client.publish(KEYS.channel, json.dumps({"model_path": str(operator.path)}))
    wait_for(lambda: served_version(node) == 142, timeout=10)
    wait_for(lambda: int(client.get(KEYS.version) or 0) == 142, timeout=5)
    _served_everywhere_as_143(volatile_redis, start_node, node, incoming / "trainer.pt")
    assert node.listener.counters["loss_seen_while_subscribed"] == 0
    assert node.listener.counters["data_loss"] == 0
    client.close()


def test_a_trainer_faster_than_the_record_of_an_unversioned_message(
    volatile_redis: EmbeddedRedis,
    start_node: StartNode,
    model_root: Path,
    incoming: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but the trainer's notify lands between the operator's message and the
    node's record of it: it is allocated v4 and moves :latest, and the record finds
    :latest moved on. The counter is raised to 142 all the same (the node serves 142 either
    way), so the trainer's next checkpoint is v143, served by the running node and by a
    node started later (a review proved the counter left at 4 and the fleet split for every
    checkpoint after, until a node reconnected)."""
    node, _ = _serving_v3(volatile_redis, start_node, model_root, incoming)
    assert node.recorder is not None
    client = volatile_redis.client()
    record = node.recorder.record
    first = write_checkpoint(incoming, 0, name="trainer_1.pt", seed=42)
    sent: list[CheckpointNotification | None] = []

    def trainer_first(*args: object) -> str:
        if not sent:
            sent.append(notify_checkpoint(first.path, redis_url=volatile_redis.url).notification)
        return record(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(node.recorder, "record", trainer_first)
    operator = write_checkpoint(incoming, 142, name="operator.pt", seed=41)
    client.publish(KEYS.channel, json.dumps({"model_path": str(operator.path)}))
    wait_for(lambda: node.applier.counters["record_superseded"] == 1, timeout=10)
    assert sent and sent[0] is not None and sent[0].version == 4
    assert served_version(node) == 142
    assert int(client.get(KEYS.version) or 0) == 142
    _served_everywhere_as_143(volatile_redis, start_node, node, incoming / "trainer_2.pt")
    client.close()


def _served_everywhere_as_143(
    redis_server: EmbeddedRedis, start_node: StartNode, node: ServingNode, path: Path
) -> None:
    """The trainer's next checkpoint (saved at ``path``) is allocated v143 and served by
    ``node`` and by a node started later."""
    trainer = write_checkpoint(path.parent, 0, name=path.name, seed=43)
    sent = notify_checkpoint(trainer.path, redis_url=redis_server.url).notification
    assert sent is not None and sent.version == 143
    wait_for(lambda: getattr(node.holder.current(), "sha256", None) == trainer.sha256, 10)
    later = start_node(redis_server.url, heartbeat_seconds=0.2, node_id="n2")
    wait_for(lambda: getattr(later.holder.current(), "sha256", None) == trainer.sha256, 10)
    assert served_version(later) == served_version(node) == 143


def test_a_served_version_above_the_counter_is_no_loss(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """An operator's raw PUBLISH targeted at the node as v300 is served and never recorded
    (a canary must not spread by catch-up), so nothing raises the counter to it; the
    trainer's next checkpoint (v4) is stale here. The heartbeats read :version at 4, below
    what the node serves, and take it for no loss: nothing is caught up or announced again,
    v300 stays served (the third review proved a false loss here re-announced the trainer's
    checkpoint above the served version)."""
    node, target = _serving_targeted_v300(volatile_redis, start_node, model_root, incoming)
    beats = node.registry.beats
    wait_for(lambda: node.registry.beats >= beats + 6, timeout=10)
    assert node.listener.counters["loss_seen_while_subscribed"] == 0
    assert node.listener.counters["data_loss"] == 0
    assert node.holder.current().sha256 == target.sha256  # type: ignore[union-attr]
    assert node.applier.counters["reannounce_announced"] == 0


def _serving_targeted_v300(
    redis_server: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> tuple[ServingNode, SavedCheckpoint]:
    """A node serving v3 (``_serving_v3``), then an operator's raw PUBLISH targeted at it as
    v300 (served, never recorded: the counter stays 3), then the trainer's next checkpoint,
    allocated v4 (stale here): the node and the targeted checkpoint."""
    node, _ = _serving_v3(redis_server, start_node, model_root, incoming)
    client = redis_server.client()
    target = write_checkpoint(incoming, 300, name="targeted.pt", seed=51)
    raw = {"model_path": str(target.path), "version": 300, "nodes": ["n1"]}
    client.publish(KEYS.channel, json.dumps(raw))
    client.close()
    wait_for(lambda: served_version(node) == 300, timeout=10)
    x = write_checkpoint(incoming, 0, name="x.pt", seed=52)
    sent = notify_checkpoint(x.path, redis_url=redis_server.url).notification
    assert sent is not None and sent.version == 4
    return node, target


def test_a_reconnect_after_a_raw_targeted_version_above_the_counter_is_no_loss(
    volatile_redis: EmbeddedRedis, start_node: StartNode, model_root: Path, incoming: Path
) -> None:
    """An operator's raw PUBLISH targeted at the node as v300 (never recorded: the counter
    stays 3), then the trainer's X as v4 (stale here), then the subscription killed. The
    reconnect's catch-up reads the counter at 4, what the node saw it hold: no loss, X
    stays judged, nothing is announced again and v300 stays served (the fourth review
    proved the node took it for a loss and announced X again as v301)."""
    node, target = _serving_targeted_v300(volatile_redis, start_node, model_root, incoming)
    client = volatile_redis.client()
    wait_for(lambda: node.listener.counters["received_channel"] >= 3, timeout=5)
    sessions = node.listener.sessions
    client.client_kill_filter(_type="pubsub")
    wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, timeout=10)
    assert node.applier.wait_idle(5)
    assert node.listener.counters["data_loss"] == 0
    assert node.holder.current().sha256 == target.sha256  # type: ignore[union-attr]
    assert node.applier.counters["reannounce_announced"] == 0
    assert node.listener.counters["reannounced"] == 0
    client.close()
