"""REDIS_URL in every form of SPEC §10 is parsed in one place; bad forms fail with a reason."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from common import Settings
from common.redis_io.connect import LazyRedis, Timeouts, connect, is_readonly
from common.redis_io.url import parse_redis_url
from common.settings import keys_for, redact_url


def test_single_server_forms_are_left_to_redis_py() -> None:
    """redis://, rediss:// and unix:// stay one server, TLS only for rediss://."""
    assert parse_redis_url("redis://u:p@h:6380/2").kind == "server"
    assert parse_redis_url("rediss://h/0").tls
    assert parse_redis_url("unix:///run/redis.sock?db=1").kind == "server"


def test_sentinel_url_names_hosts_service_db_and_credentials() -> None:
    """Several sentinels, the service, the db and an ACL user of the master."""
    t = parse_redis_url(
        "redis+sentinel://trainer:s%3Acret@10.0.0.1:26379,[::1]:26380,sent3/mymaster/2"
        "?sentinel_username=sen&sentinel_password=pw"
    )
    assert t.kind == "sentinel" and not t.tls
    assert t.hosts == (("10.0.0.1", 26379), ("::1", 26380), ("sent3", 26379))
    assert (t.service, t.db) == ("mymaster", 2)
    assert t.credentials() == {"username": "trainer", "password": "s:cret"}
    assert (t.sentinel_username, t.sentinel_password) == ("sen", "pw")
    assert "s:cret" not in repr(t) and "pw" not in repr(t)


def test_tls_variants_carry_their_options() -> None:
    """rediss+sentinel:// and rediss+cluster:// turn TLS on, with the ssl_* options."""
    t = parse_redis_url(
        "rediss+cluster://h1:7000,h2:7001?ssl_ca_certs=/ca.pem&ssl_check_hostname=false"
    )
    assert t.kind == "cluster" and t.tls and t.db == 0
    assert t.tls_kwargs() == {"ssl": True, "ssl_ca_certs": "/ca.pem", "ssl_check_hostname": False}
    assert parse_redis_url("rediss+sentinel://h:1/m").tls_kwargs() == {"ssl": True}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:1/0", "not supported"),
        ("redis-sentinel://h/m", "not supported"),
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h:26379/m/x", "not a number"),
        ("redis+sentinel://h:26379/m/0/extra", "service name"),
        ("redis+sentinel://h:99999/m", "out of range"),
        ("redis+sentinel://h:26379,/m", "host ''"),
        ("redis+sentinel://h/m?sentinal_password=x", "does not take"),
        ("redis+cluster://h:7000/3", "one database"),
        ("redis+cluster://h:7000?ssl_ca_certs=/ca.pem", "TLS options need"),
        ("redis+cluster://h:7000?sentinel_password=x", "does not take"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, says: str) -> None:
    """A typo fails at start (Settings too), saying what is wrong."""
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        parse_redis_url(url)
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        Settings(redis_url=url)


def test_a_refused_url_does_not_echo_its_password() -> None:
    """The start-up error names what is wrong, never the password in the URL."""
    with pytest.raises(ValueError, match="service name") as refused:
        Settings(redis_url="redis+sentinel://trainer:hunter2@h:26379")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss+sentinel://t:pw@h1:1,h2:2/m/0?sentinel_password=x&ssl_ca_certs=/ca",
         "rediss+sentinel://t:***@h1:1,h2:2/m/0?sentinel_password=***&ssl_ca_certs=/ca"),
        ("rediss+cluster://node:pw@h1:7000,h2:7001", "rediss+cluster://node:***@h1:7000,h2:7001"),
    ],
)  # fmt: skip
def test_new_forms_are_redacted(url: str, shown: str) -> None:
    """Secrets of the TLS sentinel and cluster forms never reach a log."""
    assert redact_url(url) == shown


def test_cluster_keys_share_one_slot_and_the_channel_keeps_its_name() -> None:
    """In a cluster every key of an instance carries the channel as its hash tag (one slot,
    the channel's own: a script may SPUBLISH); the channel is the same as on one server."""
    plain = keys_for("inst-1", "redis://h/0")
    tagged = keys_for("inst-1", "redis+cluster://h:7000")
    assert plain.latest == "fks:inst-1:model_checkpoints:latest"
    assert tagged.latest == "{fks:inst-1:model_checkpoints}:latest"
    assert tagged.nodes == "{fks:inst-1:model_checkpoints}:nodes"
    assert tagged.channel == plain.channel == "fks:inst-1:model_checkpoints"
    slots = {
        key_slot(k.encode())
        for k in (
            tagged.channel,
            tagged.latest,
            tagged.version,
            tagged.nodes,
            tagged.blobs,
            tagged.blob("a" * 64),
        )
    }
    assert len(slots) == 1


def test_clients_of_each_form_are_built_without_a_server() -> None:
    """One server and Sentinel clients are lazy in redis-py; a cluster client is built on
    first use by LazyRedis, whose get() raises a Redis error while nobody answers."""
    assert isinstance(connect("redis://127.0.0.1:1/0"), redis.Redis)
    sentinel = connect("redis+sentinel://127.0.0.1:1/mymaster", Timeouts(0.2, 0.2))
    with pytest.raises(redis.ConnectionError, match="No master found"):
        sentinel.ping()
    lazy = LazyRedis("redis+cluster://127.0.0.1:1", Timeouts(0.2, 0.2))
    with pytest.raises(Exception, match="127.0.0.1:1"):
        lazy.get()
    lazy.close()


def test_readonly_errors_are_recognised_in_scripts_too() -> None:
    """A demoted master's READONLY, plain or wrapped in a script's error, means failover."""
    assert is_readonly(redis.ReadOnlyError("You can't write against a read only replica."))
    assert is_readonly(redis.ResponseError("ERR Error running script: -READONLY You can't"))
    assert not is_readonly(redis.ResponseError("NOSCRIPT"))
