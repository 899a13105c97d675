"""notify_checkpoint against a real redis-server (SPEC §3, §6)."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common import CheckpointNotification, RedisKeys
from common.checkpoint import save_checkpoint
from common.policy import SACActor
from fks.redis_server import EmbeddedRedis, free_port
from publisher import CheckpointNotifier, notify_checkpoint

KEYS = RedisKeys("default")


@pytest.fixture
def subscriber(redis_url: str) -> Iterator[redis.client.PubSub]:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.channel)
    pubsub.get_message(timeout=1)
    yield pubsub
    pubsub.close()
    client.close()


def next_message(pubsub: redis.client.PubSub, timeout: float = 2.0) -> CheckpointNotification:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.1)
        if msg and msg["type"] == "message":
            return CheckpointNotification.from_message(msg["data"])
    raise AssertionError("no message arrived")


def latest(client: redis.Redis) -> CheckpointNotification:
    raw = client.get(KEYS.latest)
    assert raw is not None
    return CheckpointNotification.from_message(raw)


def test_notify_reaches_a_real_subscriber_and_sets_latest(
    redis_url: str, redis_client: redis.Redis, subscriber: redis.client.PubSub, tmp_path: Path
) -> None:
    """One call publishes on the channel and writes the same JSON to :latest."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor(), version=1)
    result = notify_checkpoint(
        saved.path, "sac_stat_pair", version=1, training_step=500,
        metadata={"loss": 0.5}, redis_url=redis_url,
    )  # fmt: skip
    assert result.sent and result.receivers == 1 and result.latest_updated
    got = next_message(subscriber)
    assert got == result.notification
    assert got.model_path == str(saved.path) and got.version == 1
    assert got.training_step == 500 and got.metadata == {"loss": "0.5"}
    assert got.sha256 == saved.sha256, "the publisher hashes a readable file"
    assert latest(redis_client) == got


def test_relative_paths_are_sent_absolute(
    redis_url: str, subscriber: redis.client.PubSub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers do not share the trainer's working directory, so paths go out absolute."""
    monkeypatch.chdir(tmp_path)
    notify_checkpoint("model_2.pt", version=2, redis_url=redis_url)
    assert next_message(subscriber).model_path == str(tmp_path / "model_2.pt")


def test_redis_cli_subscribe_shows_what_notify_sends(session_redis: EmbeddedRedis) -> None:
    """An operator's `redis-cli SUBSCRIBE` prints the exact JSON notify_checkpoint sent."""
    cli = session_redis.binary.with_name("redis-cli")
    with subprocess.Popen(
        [str(cli), "-p", str(session_redis.port), "SUBSCRIBE", KEYS.channel],
        stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        try:
            for _ in range(3):  # "subscribe", channel, count
                proc.stdout.readline()
            result = notify_checkpoint(
                "/models/model_9.pt", "m", version=9, redis_url=session_redis.url
            )
            lines = [proc.stdout.readline().strip() for _ in range(3)]
        finally:
            proc.kill()
    assert lines[:2] == ["message", KEYS.channel]
    assert result.notification is not None
    assert json.loads(lines[2]) == json.loads(result.notification.to_json())


def test_versions_are_allocated_with_incr_when_not_given(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """No version given: 1, 2, 3 ... from the :version counter."""
    with CheckpointNotifier(redis_url) as notifier:
        versions = [notifier.notify(f"/m/model_{i}.pt").notification for i in range(3)]
    assert [n.version for n in versions if n] == [1, 2, 3]
    assert redis_client.get(KEYS.version) == "3"


def test_an_explicit_version_moves_the_counter_ahead(redis_url: str) -> None:
    """After an explicit version 10, the next allocated version is 11."""
    with CheckpointNotifier(redis_url) as notifier:
        notifier.notify("/m/a.pt", version=10)
        result = notifier.notify("/m/b.pt")
    assert result.notification is not None and result.notification.version == 11


def test_an_older_version_never_overwrites_a_newer_latest(
    redis_url: str, redis_client: redis.Redis, subscriber: redis.client.PubSub
) -> None:
    """v5 then v3: :latest stays at v5, but v3 is still published (a node may want it)."""
    notify_checkpoint("/m/model_5.pt", version=5, redis_url=redis_url)
    older = notify_checkpoint("/m/model_3.pt", version=3, redis_url=redis_url)
    assert older.sent and not older.latest_updated
    assert [next_message(subscriber).version for _ in range(2)] == [5, 3]
    assert latest(redis_client).version == 5


def test_unversioned_never_replaces_a_versioned_latest(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """version=0 (unversioned) cannot be ordered against v4, so :latest keeps v4."""
    notify_checkpoint("/m/model_4.pt", version=4, redis_url=redis_url)
    notify_checkpoint("/m/model_x.pt", version=0, redis_url=redis_url)
    assert latest(redis_client).version == 4


def test_one_version_names_one_checkpoint(redis_url: str, redis_client: redis.Redis) -> None:
    """Re-announcing a version for the same checkpoint is published (idempotent, :latest
    kept); a second checkpoint under a version :latest holds is refused, nothing sent."""
    first = notify_checkpoint("/m/model_4.pt", version=4, redis_url=redis_url)
    again = notify_checkpoint("/m/model_4.pt", version=4, redis_url=redis_url)
    assert again.sent and again.outcome == "published" and not again.latest_updated
    other = notify_checkpoint("/m/model_4b.pt", version=4, redis_url=redis_url)
    assert not other.sent and other.outcome == "conflict"
    assert "/m/model_4.pt" in other.reason
    assert latest(redis_client) == first.notification


def test_racing_publishers_leave_the_newest_in_latest(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """8 threads publishing 200 versions in any order end with :latest at the maximum."""
    versions = list(range(1, 201))
    random.Random(7).shuffle(versions)
    chunks = [versions[i::8] for i in range(8)]

    def publish(chunk: list[int]) -> None:
        with CheckpointNotifier(redis_url) as notifier:
            for v in chunk:
                assert notifier.notify(f"/m/model_{v}.pt", version=v).sent

    threads = [threading.Thread(target=publish, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert latest(redis_client).version == 200


def test_disabled_notify_is_a_logged_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENABLE_CHECKPOINT_NOTIFY=false sends nothing and says so, even with no Redis at all."""
    monkeypatch.setenv("ENABLE_CHECKPOINT_NOTIFY", "false")
    caplog.set_level("INFO", logger="publisher")
    result = notify_checkpoint("/m/a.pt", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert not result.sent and result.reason == "disabled"
    assert "disabled" in caplog.text


def test_redis_down_returns_a_reason_quickly() -> None:
    """Nothing listening: a result with the reason in well under 2 s, no exception."""
    start = time.monotonic()
    result = notify_checkpoint("/m/a.pt", version=1, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert time.monotonic() - start < 2.0
    assert not result.sent and result.reason.startswith("redis_unavailable")


def test_a_hung_redis_returns_within_two_seconds(own_redis: EmbeddedRedis) -> None:
    """A SIGSTOPped server (socket open, no answers) costs at most the 1 s timeout."""
    own_redis.pause()
    try:
        start = time.monotonic()
        result = notify_checkpoint("/m/a.pt", redis_url=own_redis.url)
        elapsed = time.monotonic() - start
    finally:
        own_redis.resume()
    assert elapsed < 2.0
    assert not result.sent and "redis_unavailable" in result.reason


def test_passwords_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """The warning for an unreachable Redis shows the URL with its password masked."""
    caplog.set_level("WARNING", logger="publisher")
    notify_checkpoint("/m/a.pt", redis_url=f"redis://:s3cr3t@127.0.0.1:{free_port()}/0")
    assert "s3cr3t" not in caplog.text and "***" in caplog.text


def test_messages_are_signed_when_a_secret_is_set(
    redis_url: str, subscriber: redis.client.PubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FKS_NOTIFY_SECRET set, what arrives verifies under that secret."""
    monkeypatch.setenv("FKS_NOTIFY_SECRET", "shared-secret")
    notify_checkpoint("/m/a.pt", version=1, redis_url=redis_url)
    msg = subscriber.get_message(timeout=2)
    assert msg is not None
    verified = CheckpointNotification.from_message(msg["data"], secret="shared-secret")
    assert verified.signature is not None


def test_bad_instance_id_raises_at_the_call_site(redis_url: str) -> None:
    """A malformed instance id is the caller's error: ValueError, nothing published."""
    with pytest.raises(ValueError, match="instance_id"):
        notify_checkpoint("/m/a.pt", instance_id="bad id", redis_url=redis_url)


def test_instances_are_isolated(redis_url: str, redis_client: redis.Redis) -> None:
    """A notification for instance 'a' does not touch instance 'b'."""
    notify_checkpoint("/m/a.pt", version=1, instance_id="a", redis_url=redis_url)
    assert redis_client.get(RedisKeys("a").latest) is not None
    assert redis_client.get(RedisKeys("b").latest) is None
