"""TLS and ACL users (SPEC §10) on a real Redis 7: the whole flow over TLS with the documented
minimal users, each refused what it should not do, and a client without the CA refused."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from common.notification import CheckpointNotification
from fks.redis_seven import Redis7Unavailable, ensure_redis7
from fks.redis_tls import TlsRedis
from publisher import CheckpointNotifier
from subscriber import ServingNode
from tests.helpers import served_version, wait_for, write_checkpoint

pytestmark = pytest.mark.slow
StartNode = Callable[..., ServingNode]
ACL_PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "tls.md"
PASSWORDS = {"TRAINER_PASSWORD": "trainer-pw-1", "NODE_PASSWORD": "node-pw-2"}


def readme_acl_lines() -> list[str]:
    """The exact `ACL SETUSER` lines of docs/how-to/tls.md (placeholders filled in)."""
    lines = [ln for ln in ACL_PAGE.read_text().splitlines() if ln.startswith("ACL SETUSER ")]
    assert [ln.split()[2] for ln in lines] == ["trainer", "node"], lines
    return [re.sub("|".join(PASSWORDS), lambda m: PASSWORDS[m.group(0)], ln) for ln in lines]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A TLS-only Redis 7 with the documented users (Debian's redis-server, fetched if absent)."""
    try:
        binary = ensure_redis7()
    except Redis7Unavailable as exc:
        pytest.skip(f"no Redis 7 with TLS: {exc}")
    server = TlsRedis(binary, tmp_path_factory.mktemp("tls-redis"))
    server.start()
    admin = server.admin()
    for line in readme_acl_lines():
        admin.execute_command(*line.split())  # type: ignore[no-untyped-call]
    admin.close()
    try:
        yield server
    finally:
        server.close()


def url_for(server: TlsRedis, user: str, *, ca: Path | None = None, with_ca: bool = True) -> str:
    password = PASSWORDS[f"{user.upper()}_PASSWORD"]
    query = f"?ssl_ca_certs={ca or server.tls.ca}" if with_ca else ""
    return f"rediss://{user}:{password}@127.0.0.1:{server.port}/0{query}"


def as_user(server: TlsRedis, user: str) -> redis.Redis:
    return redis.Redis.from_url(url_for(server, user))


def test_the_whole_flow_over_tls_with_the_minimal_users(
    tls_redis: TlsRedis, start_node: StartNode, incoming: Path, tmp_path: Path
) -> None:
    """trainer notifies (a path, then a Redis blob) → the node serves both over TLS; a node
    started later catches up; the registry holds the node."""
    admin = tls_redis.admin()
    admin.flushall()
    node_url = url_for(tls_redis, "node")
    node = start_node(
        node_url, cache_dir=tmp_path / "cache", node_id="tls-a", model_urls="redis-blob:"
    )
    wait_for(lambda: node.listener.connected and node.registry.beats > 0)
    acks = admin.pubsub()
    acks.subscribe("fks:default:acks")
    with CheckpointNotifier(url_for(tls_redis, "trainer")) as trainer:
        first = trainer.notify(write_checkpoint(incoming, 1).path, version=1)
        assert first.outcome == "published" and first.receivers == 1, first.reason
        wait_for(lambda: served_version(node) == 1)
        heard: list[bytes] = []
        wait_for(lambda: _ack_heard(acks, heard), timeout=5)  # the node may publish its acks
        assert b'"node":"tls-a"' in heard[0] and b'"outcome":"applied"' in heard[0]
        acks.close()
        blob = trainer.notify(write_checkpoint(tmp_path, 2).path, version=2, transport="redis")
        assert blob.sent, blob.reason
    wait_for(lambda: served_version(node) == 2, timeout=10)
    late = start_node(
        node_url, cache_dir=tmp_path / "cache-late", node_id="tls-b", model_urls="redis-blob:"
    )
    wait_for(lambda: served_version(late) == 2, timeout=10)
    wait_for(lambda: admin.hlen("fks:default:nodes") == 2)
    raw = admin.get("fks:default:model_checkpoints:latest")
    assert raw is not None and CheckpointNotification.from_message(raw).version == 2
    admin.close()


def _ack_heard(pubsub: redis.client.PubSub, heard: list[bytes]) -> bool:
    message = pubsub.get_message(timeout=0.05)
    if message is not None and message["type"] == "message":
        heard.append(message["data"])
    return bool(heard)


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("trainer", ("HSET", "fks:default:nodes", "n", "{}")),
        ("trainer", ("GET", "fks:other:model_checkpoints:latest")),
        ("trainer", ("PUBLISH", "fks:other:model_checkpoints", "{}")),
        ("trainer", ("FLUSHALL",)),
        ("trainer", ("CONFIG", "GET", "*")),
        ("trainer", ("KEYS", "*")),
        ("node", ("SET", "fks:default:blob:" + "a" * 64, "x")),
        ("node", ("DEL", "fks:default:model_checkpoints:latest")),
        ("node", ("GET", "fks:other:model_checkpoints:latest")),
        ("node", ("FLUSHALL",)),
        ("node", ("CONFIG", "GET", "*")),
        ("node", ("KEYS", "*")),
    ],
)
def test_each_user_is_refused_what_it_should_not_do(
    tls_redis: TlsRedis, user: str, command: tuple[str, ...]
) -> None:
    """NOPERM for every command or key outside a user's job."""
    client = as_user(tls_redis, user)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def test_the_trainer_cannot_subscribe(tls_redis: TlsRedis) -> None:
    """A trainer's user has no SUBSCRIBE: it cannot eavesdrop on the channel."""
    pubsub = as_user(tls_redis, "trainer").pubsub()
    pubsub.subscribe("fks:default:model_checkpoints")
    with pytest.raises(redis.exceptions.NoPermissionError):
        for _ in range(20):
            pubsub.get_message(timeout=0.1)
    pubsub.close()


@pytest.mark.parametrize("ca", ["none", "other"])
def test_a_client_without_the_ca_is_refused(
    tls_redis: TlsRedis, start_node: StartNode, incoming: Path, ca: str
) -> None:
    """Without the server's CA (the system store, or another CA) the TLS handshake fails:
    the trainer gets not_sent with the reason, the node never subscribes."""
    url = url_for(tls_redis, "trainer", with_ca=False)
    node_url = url_for(tls_redis, "node", with_ca=False)
    if ca == "other":
        url = url_for(tls_redis, "trainer", ca=tls_redis.tls.other_ca)
        node_url = url_for(tls_redis, "node", ca=tls_redis.tls.other_ca)
    with CheckpointNotifier(url) as trainer:
        result = trainer.notify(write_checkpoint(incoming, 9).path, version=9)
    assert result.outcome == "not_sent" and "certificate verify failed" in result.reason
    node = start_node(node_url)
    wait_for(lambda: node.listener.counters["connection_errors"] >= 2)
    assert not node.listener.connected
