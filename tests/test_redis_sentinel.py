"""Behind Sentinel (SPEC §10): a node and a trainer given a redis+sentinel:// URL follow a
failover, a SIGKILLed master or a manual one whose old master stays up (the quiet trap)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from common.redis_io.connect import sentinel_of
from fks.redis_topology import SentinelSet
from publisher import CheckpointNotifier
from subscriber import ServingNode
from tests.helpers import served_version, wait_for, write_checkpoint

pytestmark = pytest.mark.slow
StartNode = Callable[..., ServingNode]


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    """A master, 2 replicas and 3 sentinels for this module (tests fail it over in turn)."""
    with SentinelSet() as topology:
        yield topology


@pytest.fixture
def sentinel_url(sentinels: SentinelSet) -> str:
    client = redis.Redis(host="127.0.0.1", port=sentinels.master_port())
    client.flushall()
    client.close()
    return sentinels.url


def test_a_node_and_a_trainer_use_the_master_the_sentinels_name(
    sentinel_url: str, sentinels: SentinelSet, start_node: StartNode, incoming: Path
) -> None:
    """notify through the sentinels → the node serves it; the message is on the master."""
    node = start_node(sentinel_url)
    wait_for(lambda: node.listener.connected)
    with CheckpointNotifier(sentinel_url) as notifier:
        result = notifier.notify(write_checkpoint(incoming, 1).path, version=1)
    assert result.outcome == "published" and result.receivers == 1
    wait_for(lambda: served_version(node) == 1)
    master = redis.Redis(host="127.0.0.1", port=sentinels.master_port())
    assert master.get(node.listener.keys.latest) is not None
    master.close()


def test_a_killed_master_is_a_reconnect(
    sentinel_url: str, sentinels: SentinelSet, start_node: StartNode, incoming: Path
) -> None:
    """SIGKILL the master: the node resubscribes on the promoted replica and serves what is
    published there; a checkpoint published while it was away comes by catch-up."""
    node = start_node(sentinel_url)
    wait_for(lambda: node.listener.connected)
    sessions = node.listener.sessions
    killed = sentinels.kill_master()
    try:
        sentinels.wait_new_master(killed.port)
        wait_for(lambda: node.listener.sessions > sessions and node.listener.connected, 10)
        with CheckpointNotifier(sentinel_url) as notifier:
            assert notifier.notify(write_checkpoint(incoming, 2).path, version=2).sent
        wait_for(lambda: served_version(node) == 2, timeout=10)
    finally:
        sentinels.rejoin(killed)


def test_the_quiet_trap_a_manual_failover(
    sentinel_url: str, sentinels: SentinelSet, start_node: StartNode, incoming: Path
) -> None:
    """SENTINEL FAILOVER with the old master up: no socket breaks, yet the node moves to the
    new master (it asks the sentinels) and serves what the trainer publishes there."""
    node = start_node(sentinel_url)
    wait_for(lambda: node.listener.connected)
    old = sentinels.master_port()
    with CheckpointNotifier(sentinel_url) as notifier:
        assert notifier.notify(write_checkpoint(incoming, 3).path, version=3).sent
        wait_for(lambda: served_version(node) == 3)
        sentinels.failover()
        sentinels.wait_new_master(old)
        result = notifier.notify(write_checkpoint(incoming, 4).path, version=4)
        assert result.sent, result.reason
    wait_for(lambda: served_version(node) == 4, timeout=10)
    assert node.listener.counters["master_moved"] >= 1, node.listener.status()
    # the catch-up is applied before the session says it is connected (its recorder asks
    # the sentinels first): connected a moment later
    wait_for(lambda: node.listener.status()["connected"], timeout=5)
    sentinels.settle(old)


def test_a_demoted_master_answering_readonly_costs_one_retry(
    sentinel_url: str, sentinels: SentinelSet, incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trainer sent to a master demoted under it (a sentinel that has not heard yet) gets
    READONLY: it asks again, publishes on the new master, once; the outcome is published."""
    old = sentinels.master_port()
    sentinels.failover()
    new = sentinels.wait_new_master(old)
    sentinels.settle(old)
    notifier = CheckpointNotifier(sentinel_url)
    client = notifier._redis()
    manager = sentinel_of(client)
    assert manager is not None
    answers = iter([("127.0.0.1", old)] * 2)  # stale (asked, then connected), then true
    real = manager.discover_master
    monkeypatch.setattr(
        manager,
        "discover_master",
        lambda name: next(answers, None) or real(name),
    )
    promoted = redis.Redis(host="127.0.0.1", port=new)
    try:
        result = notifier.notify(write_checkpoint(incoming, 6).path, version=6)
        assert result.outcome == "published", result.reason
        assert notifier.retries == 1
        assert promoted.get(notifier.keys.latest) is not None
    finally:
        promoted.close()
        notifier.close()


def test_readonly_twice_is_not_sent_after_one_retry(sentinels: SentinelSet, incoming: Path) -> None:
    """A plain URL naming a replica: READONLY, one retry, READONLY again → not_sent with the
    reason, nothing published."""
    # an earlier test's failover may have been tried again in a new epoch and left its first
    # pick a master of nothing (accepting writes): settled, every other node is a replica
    sentinels.wait_settled()
    master = sentinels.master_port()
    replica = next(n.port for n in sentinels.nodes if n.port != master and n.process is not None)
    with CheckpointNotifier(f"redis://127.0.0.1:{replica}/0") as notifier:
        result = notifier.notify(write_checkpoint(incoming, 7).path)
    assert result.outcome == "not_sent" and "READONLY" in result.reason
    assert notifier.retries == 1


def test_the_listener_closes_its_sentinel_connections(sentinel_url: str) -> None:
    """A master client built from a sentinel URL knows its sentinels (to ask and to close)."""
    from common.redis_io.connect import close_client, connect

    client = connect(sentinel_url)
    manager = sentinel_of(client)
    assert manager is not None and len(manager.sentinels) == 3
    client.ping()
    close_client(client)


def test_fks_status_reads_through_the_sentinels(
    sentinel_url: str, start_node: StartNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fks status` with a sentinel URL finds the master and the listening node."""
    from fks.cli import main

    node = start_node(sentinel_url)
    wait_for(lambda: node.listener.connected and node.registry.beats > 0)
    assert main(["status", "--json", "--redis-url", sentinel_url]) == 0
    out = capsys.readouterr().out
    assert '"subscribers": 1' in out and node.registry.node_id in out
