"""The listener against real redis-server processes: swaps, skips, bursts and faults."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from common import CheckpointNotification, RedisKeys
from common.signing import sign_payload
from fks.redis_server import EmbeddedRedis, free_port
from publisher import CheckpointNotifier, notify_checkpoint
from subscriber import ServingNode
from subscriber.model.plan import Candidate, Located
from tests.helpers import served_version, wait_for, write_checkpoint

KEYS = RedisKeys("default")
StartNode = Callable[..., ServingNode]


def connected(node: ServingNode) -> bool:
    return node.listener.connected


def sample(node: ServingNode, name: str, **labels: str) -> float:
    """A series of the node's model (every one carries model="<instance>")."""
    labels = {"model": node.metrics.model, **labels}
    return node.metrics.registry.get_sample_value(name, labels) or 0.0


def stale(node: ServingNode, reason: str) -> float:
    return sample(node, "fks_stale_skips_total", reason=reason)


def publish(url: str, path: Path, version: int, **kw: object) -> None:
    result = notify_checkpoint(path, version=version, redis_url=url, **kw)  # type: ignore[arg-type]
    assert result.sent, result


def test_a_notification_is_swapped_in(
    redis_url: str, start_node: StartNode, model_root: Path
) -> None:
    """publish → the node serves the new version, from the channel, in Redis mode."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    assert node.mode == "redis" and served_version(node) is None
    publish(redis_url, write_checkpoint(model_root, 1).path, 1)
    wait_for(lambda: served_version(node) == 1)
    model = node.holder.current()
    assert model is not None and model.source == "channel"
    wait_for(lambda: sample(node, "fks_notify_to_swap_seconds_count") == 1.0)


def test_stale_duplicate_and_forced_notifications(
    redis_url: str, start_node: StartNode, model_root: Path
) -> None:
    """v2 served; v2 again and v1 are skipped; v1 with force is applied."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    one, two = write_checkpoint(model_root, 1), write_checkpoint(model_root, 2)
    publish(redis_url, two.path, 2)
    wait_for(lambda: served_version(node) == 2)
    publish(redis_url, two.path, 2)
    wait_for(lambda: stale(node, "stale_version") == 1)
    publish(redis_url, one.path, 1)
    wait_for(lambda: stale(node, "stale_version") == 2)
    assert served_version(node) == 2
    publish(redis_url, one.path, 1, force=True)
    wait_for(lambda: served_version(node) == 1)


def test_a_stale_notice_is_judged_on_arrival_without_touching_a_file(
    redis_url: str, start_node: StartNode, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stale by its version alone (a duplicate, an older version, a path outside the roots or
    on a FIFO that would block any reader): acked stale at once; nothing is located, loaded
    or handed to the applier, and the next newer message is applied as usual."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    two = write_checkpoint(model_root, 2)
    publish(redis_url, two.path, 2)
    wait_for(lambda: served_version(node) == 2)
    node.applier.wait_idle(5)
    located: list[str] = []
    locate = node.holder.locate

    def counted(candidate: Candidate) -> Located:
        located.append(candidate.path)
        return locate(candidate)

    monkeypatch.setattr(node.holder, "locate", counted)
    batches = sum(v for k, v in node.applier.counters.items() if k.startswith("outcome_"))
    fifo = model_root / "model_fifo.pt"
    os.mkfifo(fifo)
    client = redis.Redis.from_url(redis_url)
    for i, path in enumerate([str(two.path), "/etc/passwd", str(fifo)]):
        raw = CheckpointNotification(model_path=path, version=2 - i % 2).to_json()
        client.publish(KEYS.channel, raw)
    client.close()
    wait_for(lambda: stale(node, "stale_version") == 3)
    assert located == [] and served_version(node) == 2
    assert sum(v for k, v in node.applier.counters.items() if k.startswith("outcome_")) == batches
    three = write_checkpoint(model_root, 3)
    publish(redis_url, three.path, 3)
    wait_for(lambda: served_version(node) == 3)
    assert located == [str(three.path)]


def test_the_redis_cli_minimal_message_works(
    redis_url: str, start_node: StartNode, model_root: Path, redis_client: redis.Redis
) -> None:
    """An operator's bare {"model_path": ..., "force": true} forces a reload."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    saved = write_checkpoint(model_root, 3)
    redis_client.publish(KEYS.channel, json.dumps({"model_path": str(saved.path), "force": True}))
    wait_for(lambda: served_version(node) == 3)


def test_a_burst_ends_on_the_newest_with_far_fewer_loads(
    redis_url: str, start_node: StartNode, model_root: Path
) -> None:
    """1,000 notifications as fast as possible: the newest is served after few loads."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    files = [write_checkpoint(model_root, i + 1, name=f"model_{i}.pt") for i in range(5)]
    with CheckpointNotifier(redis_url) as notifier:
        for version in range(1, 1001):
            saved = files[version % 5]
            notifier.notify(saved.path, version=version, sha256=saved.sha256)
    wait_for(lambda: served_version(node) == 1000, timeout=20)
    swaps = sample(node, "fks_swaps_total", source="channel")
    swaps += sample(node, "fks_swaps_total", source="latest")
    assert 1 <= swaps <= 100, swaps
    assert sample(node, "fks_notifications_coalesced_total") >= 900


def test_kill_9_falls_back_then_catches_up_after_restart(
    own_redis: EmbeddedRedis, start_node: StartNode, model_root: Path
) -> None:
    """kill -9: requests soon serve a file written meanwhile; after a restart and an
    immediate publish, the node catches up through :latest and returns to Redis mode."""
    publish(own_redis.url, write_checkpoint(model_root, 1).path, 1)
    node = start_node(own_redis.url)
    wait_for(lambda: connected(node) and served_version(node) == 1)
    own_redis.kill()
    wait_for(lambda: not connected(node), timeout=3)
    time.sleep(0.15)
    write_checkpoint(model_root, 2)
    wait_for(lambda: getattr(node.model_for_request(), "version", None) == 2)
    assert node.holder.current().source == "mtime"  # type: ignore[union-attr]
    own_redis.start()
    publish(own_redis.url, write_checkpoint(model_root, 3).path, 3)
    wait_for(lambda: served_version(node) == 3 and connected(node), timeout=10)
    assert node.mode == "redis"


def test_client_kill_50_times_leaves_the_listener_alive_and_caught_up(
    redis_url: str, redis_client: redis.Redis, start_node: StartNode, model_root: Path
) -> None:
    """CLIENT KILL of the subscriber 50 times, publishing right after each kill: the thread
    lives, resubscribes each time, and every version published while it was away arrives."""
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    files = [write_checkpoint(model_root, 1, name=f"model_{i}.pt") for i in range(3)]
    for round_ in range(1, 51):
        sessions = node.listener.sessions
        killed = redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        publish(redis_url, files[round_ % 3].path, round_, sha256=files[round_ % 3].sha256)
        wait_for(lambda s=sessions: node.listener.sessions > s and connected(node), timeout=5)  # type: ignore[misc]
        wait_for(lambda r=round_: served_version(node) == r, timeout=5)  # type: ignore[misc]
    assert node.listener.alive()
    assert redis_client.pubsub_numsub(KEYS.channel)[0][1] == 1


def test_sigstop_is_noticed_and_sigcont_returns_to_redis_mode(
    own_redis: EmbeddedRedis, start_node: StartNode, model_root: Path
) -> None:
    """A hung server sends the node to the fallback within ~2 s; SIGCONT brings it back."""
    node = start_node(own_redis.url)
    wait_for(lambda: connected(node))
    own_redis.pause()
    try:
        took = wait_for(lambda: not connected(node), timeout=4)
        assert took < 4
        write_checkpoint(model_root, 1)
        model = node.model_for_request()
        assert model is not None and model.version == 1
    finally:
        own_redis.resume()
    wait_for(lambda: connected(node), timeout=8)
    assert node.mode == "redis"


def test_redis_never_started_then_started(
    start_node: StartNode, model_root: Path, tmp_path: Path
) -> None:
    """No Redis at all: the node serves from disk; when Redis appears it subscribes."""
    port = free_port()
    write_checkpoint(model_root, 1)
    node = start_node(f"redis://127.0.0.1:{port}/0")
    assert node.mode == "mtime" and served_version(node) == 1
    with EmbeddedRedis(port=port, persistent=False) as server:
        wait_for(lambda: connected(node), timeout=10)
        publish(server.url, write_checkpoint(model_root, 2).path, 2)
        wait_for(lambda: served_version(node) == 2)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1,2,3]", "not_object"),
        (b'{"model_path": 42}', "invalid_field"),
        (b'{"model_path": "a", "version": "7"}', "invalid_field"),
        (b'{"model_path": "a", "metadata": {"k": {"deep": 1}}}', "invalid_field"),
        (b'{"model_path":"' + b"x" * 70_000 + b'"}', "oversize"),
        (b"\xff\xfe", "not_utf8"),
    ],
)
def test_malformed_messages_are_rejected_counted_and_harmless(
    redis_url: str, redis_client: redis.Redis, start_node: StartNode, model_root: Path,
    payload: bytes, reason: str,
) -> None:  # fmt: skip
    """Each bad message is counted under its reason; the model and the thread are unchanged."""
    write_checkpoint(model_root, 1)
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    before = node.holder.current()
    redis_client.publish(KEYS.channel, payload)
    wait_for(lambda: node.listener.counters[f"rejected_{reason}"] == 1)
    assert node.holder.current() is before and node.listener.alive()
    assert sample(node, "fks_rejections_total", reason=reason) == 1.0


def test_with_a_secret_unsigned_and_forged_messages_are_rejected(
    redis_url: str, redis_client: redis.Redis, start_node: StartNode, model_root: Path
) -> None:
    """Only messages signed with FKS_NOTIFY_SECRET are applied."""
    node = start_node(redis_url, notify_secret="s3cret")
    wait_for(lambda: connected(node))
    saved = write_checkpoint(model_root, 1)
    redis_client.publish(KEYS.channel, json.dumps({"model_path": str(saved.path)}))
    forged = {"model_path": str(saved.path), "version": 1}
    forged["signature"] = sign_payload(forged, "wrong key")
    redis_client.publish(KEYS.channel, json.dumps(forged))
    wait_for(lambda: node.listener.counters["rejected_bad_signature"] == 1)
    assert node.listener.counters["rejected_unsigned"] == 1
    assert served_version(node) is None
    good = CheckpointNotification(model_path=str(saved.path), version=1).signed("s3cret")
    redis_client.publish(KEYS.channel, good.to_json())
    wait_for(lambda: served_version(node) == 1)


def test_other_instances_are_not_heard(
    redis_url: str, start_node: StartNode, model_root: Path
) -> None:
    """A node of instance 'blue' ignores instance 'green'."""
    node = start_node(redis_url, instance_id="blue")
    wait_for(lambda: connected(node))
    saved = write_checkpoint(model_root, 1)
    notify_checkpoint(saved.path, version=1, instance_id="green", redis_url=redis_url)
    notify_checkpoint(saved.path, version=1, instance_id="blue", redis_url=redis_url)
    wait_for(lambda: served_version(node) == 1)
    assert node.listener.counters["received_channel"] == 1


def test_stop_returns_within_a_second_even_when_redis_hangs(
    own_redis: EmbeddedRedis, start_node: StartNode
) -> None:
    """stop() joins both threads within 1 s, with the server SIGSTOPped."""
    node = start_node(own_redis.url)
    wait_for(lambda: connected(node))
    own_redis.pause()
    try:
        start = time.monotonic()
        node.listener.stop()
        assert time.monotonic() - start < 1.0
        assert not node.listener.alive()
    finally:
        own_redis.resume()


def test_a_started_node_uses_the_configured_torch_threads(
    start_node: StartNode, model_root: Path
) -> None:
    """FKS_TORCH_THREADS (default 1) is applied when the node starts."""
    import torch

    start_node(f"redis://127.0.0.1:{free_port()}/0", torch_threads=1)
    assert torch.get_num_threads() == 1


def test_an_idle_listener_waits_on_its_socket_and_stops_at_once(
    redis_url: str, start_node: StartNode, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between messages the reader waits on the socket until a PING is due (every 0.5 s)
    instead of polling Redis every 0.1 s; stop() wakes it at once; a message published
    while it waits is still applied at once."""
    import threading

    from redis.client import PubSub

    reads: list[str] = []
    get_message = PubSub.get_message

    def counted(self: PubSub, *args: object, **kwargs: object) -> object:
        reads.append(threading.current_thread().name)
        return get_message(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PubSub, "get_message", counted)
    node = start_node(redis_url)
    wait_for(lambda: connected(node))
    time.sleep(0.3)
    before = reads.count("fks-listener")
    time.sleep(2.0)
    polls = reads.count("fks-listener") - before
    assert polls <= 12, f"{polls} reads in 2 s idle (one per PING sent and one per PONG)"
    assert node.listener.counters["idle_waits"] > 0
    saved = write_checkpoint(model_root, 1)
    began = time.monotonic()
    publish(redis_url, saved.path, 1)
    wait_for(lambda: served_version(node) == 1, timeout=2)
    assert time.monotonic() - began < 1.0
    began = time.monotonic()
    node.listener.stop()
    assert time.monotonic() - began < 0.3 and not node.listener.alive()


def test_a_started_node_sets_the_switch_interval_and_zero_leaves_it(
    start_node: StartNode,
) -> None:
    """FKS_SWITCH_INTERVAL_MS becomes the interpreter's switch interval when the node starts;
    0 (the default) leaves whatever the process had."""
    import sys

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        start_node(f"redis://127.0.0.1:{free_port()}/0")
        assert sys.getswitchinterval() == pytest.approx(0.005)
        start_node(f"redis://127.0.0.1:{free_port()}/0", switch_interval_ms=0.5)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_a_signed_message_of_another_instance_is_refused_on_this_channel(
    redis_url: str,
    redis_client: redis.Redis,
    start_node: Callable[..., ServingNode],
    model_root: Path,
) -> None:
    """Instances that share a secret: our publishers sign the instance in, so a message of
    instance `other`, replayed on this instance's channel, is refused (`other_instance`);
    the same checkpoint announced for this instance is served."""
    secret = "shared-secret-0123456789"
    write_checkpoint(model_root, 1)
    node = start_node(redis_url, instance_id="mine", notify_secret=secret)
    wait_for(lambda: connected(node), timeout=5)
    theirs = write_checkpoint(model_root, 2, name="theirs.pt")
    eavesdropper = redis_client.pubsub()
    eavesdropper.subscribe(RedisKeys("other").channel)
    with CheckpointNotifier(redis_url, "other", secret=secret) as other:
        assert other.notify(theirs.path, version=2).sent
    captured = None
    while captured is None:
        message = eavesdropper.get_message(timeout=1)
        assert message is not None
        if message["type"] == "message":
            captured = message["data"]
    eavesdropper.close()
    assert json.loads(captured)["instance"] == "other"
    redis_client.publish(RedisKeys("mine").channel, captured)
    wait_for(lambda: node.listener.counters["rejected_other_instance"] == 1, timeout=5)
    assert served_version(node) == 1
    with CheckpointNotifier(redis_url, "mine", secret=secret) as mine:
        assert mine.notify(theirs.path, version=2).sent
    wait_for(lambda: served_version(node) == 2, timeout=5)


def test_a_report_callback_that_raises_ends_no_session(
    redis_url: str,
    redis_client: redis.Redis,
    start_node: StartNode,
    model_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listener's ``report`` (the node's acks, or a caller's own callback) raising on
    every call: garbage and a message for another node are each reported once, the session
    stays up, and the next notification is applied."""
    calls: list[tuple[str, str]] = []

    def raising(self: ServingNode, outcome: str, reason: str, *rest: object, **kw: object) -> None:
        calls.append((outcome, reason))
        raise RuntimeError("a broken report callback")

    monkeypatch.setattr(ServingNode, "_report", raising)
    node = start_node(redis_url, node_id="n1")
    wait_for(lambda: connected(node))
    sessions = node.listener.sessions
    redis_client.publish(KEYS.channel, "not json {")
    saved = write_checkpoint(model_root / "incoming", 1)
    other = {"model_path": str(saved.path), "version": 1, "nodes": ["n2"]}
    redis_client.publish(KEYS.channel, json.dumps(other))
    wait_for(lambda: node.listener.counters["ignored"] == 1)
    publish(redis_url, saved.path, 1)
    wait_for(lambda: served_version(node) == 1)
    assert node.listener.sessions == sessions and connected(node)
    assert calls[:2] == [("rejected", "not_json"), ("ignored", "not_targeted")]
