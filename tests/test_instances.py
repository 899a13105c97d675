"""Several models per node (SPEC §13): each instance is a model of its own, every channel is
read on one Redis connection, and one instance's bad messages, stalled fetch or lost Redis
never touch another's model. Real redis-server processes; real threads; a real `fks serve`
where the wire and the workers matter."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from common.fleet import read_nodes
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.settings import DEFAULT_CACHE_DIR, DEFAULT_MODEL_DIR, Settings
from fks.redis_server import EmbeddedRedis
from publisher import notify_checkpoint
from subscriber.group import NodeGroup
from tests.conftest import FAST
from tests.helpers import heartbeats_held, wait_for, write_checkpoint
from tests.http_store import HttpStore
from tests.test_oip_tritonclient import fks_serve

STATE = [0.1] * 28


# -- the settings ---------------------------------------------------------------------------


def test_each_instance_gets_its_own_roots_from_the_placeholder(tmp_path: Path) -> None:
    s = Settings(instance_ids=" a, b ,c", model_dir=tmp_path / "{instance}" / "ckpt",
                 model_path=tmp_path / "{instance}" / "model.pt")  # fmt: skip
    assert s.instances == ["a", "b", "c"]
    b = s.for_instance("b")
    assert (b.instance_id, b.instances) == ("b", ["b"])
    assert b.model_dir == tmp_path / "b" / "ckpt" and b.model_path == tmp_path / "b" / "model.pt"
    assert b.default_model_dir == DEFAULT_MODEL_DIR.parent / "b"  # cache/models/rl/{instance}
    assert b.cache_dir == DEFAULT_CACHE_DIR / "b"  # no instance prunes another's downloads
    assert b.keys.channel == "fks:b:model_checkpoints"
    remote = Settings(instance_ids="a,b", model_url="s3://bk/{instance}/",
                      model_urls="s3://bk/{instance}/").for_instance("b")  # fmt: skip
    assert remote.model_url == "s3://bk/b/" and remote.url_prefixes() == ["s3://bk/b/"] * 2
    assert b.for_instance("b") == b  # taking it again changes nothing
    one = Settings(instance_id="solo", model_dir=tmp_path / "{instance}")
    assert one.instances == ["solo"] and one.for_instance("solo").model_dir == tmp_path / "solo"
    assert one.for_instance("solo").default_model_dir == DEFAULT_MODEL_DIR  # today's default


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"instance_ids": "a,b", "model_dir": "/srv/models"}, "STAT_PAIR_RL_DIR must contain"),
        ({"instance_ids": "a,b", "model_path": "/srv/m.pt"}, "STAT_PAIR_RL_MODEL must contain"),
        ({"instance_ids": "a,b", "model_url": "s3://b/m/"}, "STAT_PAIR_RL_URL must contain"),
        ({"instance_ids": "a,b", "model_path": "/srv/{instance}.pt"}, "roots of instances a and b"),
        (
            {"instance_ids": "a,b", "model_dir": "/srv/{instance}", "default_model_dir": "/srv"},
            "roots of instances a and b overlap",
        ),
        ({"instance_ids": "a,b", "default_model_dir": "/srv/{instance}/.."}, "overlap"),
        ({"instance_ids": "a,b,a"}, "instance a is named more than once"),
        ({"instance_ids": "a,.."}, "would name a directory"),
        ({"instance_ids": "a,b c"}, "invalid instance_id"),
        ({"instance_ids": "a," + "x" * 65}, "invalid instance_id"),
    ],
    ids=[
        "shared dir",
        "shared file",
        "shared url",
        "file's dir",
        "nested",
        "dotdot root",
        "twice",
        "dotdot",
        "space",
        "too long",
    ],
)
def test_settings_that_would_mix_instances_are_refused_at_start(
    overrides: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Settings(**overrides)  # type: ignore[arg-type]


# -- one process, real Redis ------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / "models" / name for name in ("a", "b", "c")}
    for path in paths.values():
        path.mkdir(parents=True)
    return paths


@pytest.fixture
def served(roots: dict[str, Path]) -> dict[str, Path]:
    """The roots, each holding a checkpoint of version 1 of its own."""
    for n, root in enumerate(roots.values()):
        write_checkpoint(root, 1, seed=n)
    return roots


@contextmanager
def group_of(
    tmp_path: Path, redis_url: str, ids: str = "a,b,c", **extra: Any
) -> Iterator[NodeGroup]:
    settings = Settings(instance_ids=ids, redis_url=redis_url,
                        model_dir=tmp_path / "models" / "{instance}",
                        default_model_dir=tmp_path / "default" / "{instance}",
                        cache_dir=tmp_path / "cache", **extra)  # fmt: skip
    group = NodeGroup(settings, timing=FAST).start()
    try:
        # the heartbeat's first entry is written on its own thread: a notify(wait_for="all")
        # before it finds no live node (CI's machine once got there first)
        wait_for(lambda: all(node.registry.beats > 0 for node in group), timeout=10)
        yield group
    finally:
        group.stop()


def applied(path: Path, version: int, instance: str, redis_url: str) -> None:
    """Announce ``path`` to ``instance`` and wait until every node of it acked it."""
    result = notify_checkpoint(path, version=version, instance_id=instance,
                               redis_url=redis_url, wait_for="all", timeout=10)  # fmt: skip
    assert result.acks is not None and result.acks.ok, result.acks


def versions(group: NodeGroup) -> dict[str, int | None]:
    served = {name: node.holder.current() for name, node in group.nodes.items()}
    return {name: model.version if model else None for name, model in served.items()}


def test_one_connection_reads_every_channel_and_each_instance_swaps_alone(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis
) -> None:
    roots = served
    with group_of(tmp_path, own_redis.url) as group:
        assert versions(group) == {"a": 1, "b": 1, "c": 1}
        client = own_redis.client()
        subscribed = [c for c in client.client_list() if int(c.get("sub", 0)) > 0]
        assert [int(c["sub"]) for c in subscribed] == [3], subscribed  # one connection, 3 channels
        saved = write_checkpoint(roots["b"], 5, seed=9)
        applied(saved.path, 5, "b", own_redis.url)
        assert versions(group) == {"a": 1, "b": 5, "c": 1}
        assert group.nodes["b"].holder.current().path == saved.path  # type: ignore[union-attr]
        # each instance's own :latest, registry entry and metrics series
        assert json.loads(client.get(RedisKeys("b").latest) or "{}")["version"] == 5
        assert client.get(RedisKeys("a").latest) is None
        (entry,) = read_nodes(client, RedisKeys("b"))
        assert entry.entry["version"] == 5 and entry.entry["instances"] == ["a", "b", "c"]
        text = _metrics(group)
        assert 'fks_model_version{model="a"} 1.0' in text
        assert 'fks_model_version{model="b"} 5.0' in text
        assert 'fks_swaps_total{model="b",source="channel"} 1.0' in text
        assert 'fks_swaps_total{model="a",source="channel"} 0.0' in text
        own = [line for line in text.splitlines() if line.startswith("fks_listener_connected")]
        assert own == ["fks_listener_connected 1.0"]  # the node's own series, once
        client.close()


def test_bad_messages_on_one_channel_leave_the_others_untouched(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis
) -> None:
    """Junk, a message for another instance, an oversized one and a stale one on a's channel
    are refused and counted under a; b's swap right behind them lands."""
    roots = served
    with group_of(tmp_path, own_redis.url) as group:
        client = own_redis.client()
        other = write_checkpoint(roots["b"], 3, seed=7)
        for_b = {"model_path": str(other.path), "version": 9,
                 "saved_at": "2026-01-01T00:00:00Z", "instance": "b"}  # fmt: skip
        hostile = [b"{not json", b"\xff" * 10, b"[]", b"x" * 70_000, json.dumps(for_b).encode()]
        for _ in range(20):
            for raw in hostile:
                client.publish("fks:a:model_checkpoints", raw)
        saved = write_checkpoint(roots["b"], 4, seed=8)
        applied(saved.path, 4, "b", own_redis.url)
        assert versions(group) == {"a": 1, "b": 4, "c": 1}
        text = _metrics(group)
        assert 'fks_rejections_total{model="a",reason="other_instance"} 20.0' in text
        assert 'reason="other_instance"} 20.0' in text and 'model="b",reason=' not in text
        assert group.first.listener.connected and group.nodes["b"].listener.connected
        client.close()


def test_a_stalled_fetch_of_one_instance_never_holds_anothers_swap(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis, store: HttpStore
) -> None:
    """a's checkpoint comes from a store that stops after 64 KiB (a's fetch waits on it for
    up to FKS_FETCH_TIMEOUT_SECONDS); meanwhile b swaps three times and a keeps serving its
    model."""
    roots = served
    data = (write_checkpoint(tmp_path, 2, seed=3, name="remote.pt").path).read_bytes()
    url = store.put("a.pt", data, "stall")
    with group_of(tmp_path, own_redis.url, model_urls=store.url + "/",
                  fetch_timeout_seconds=60, fetch_retries=0) as group:  # fmt: skip
        sent = notify_checkpoint(url, sha256=hashlib.sha256(data).hexdigest(), version=2,
                                 instance_id="a", redis_url=own_redis.url)  # fmt: skip
        assert sent.sent
        wait_for(lambda: store.bytes_sent["a.pt"] > 0, timeout=10)
        for version in (3, 4, 5):
            saved = write_checkpoint(roots["b"], version, seed=version)
            applied(saved.path, version, "b", own_redis.url)
        assert versions(group) == {"a": 1, "b": 5, "c": 1}
        assert store.bytes_sent["a.pt"] < len(data)  # a's fetch is still stalled
        assert group.nodes["a"].model_for_request() is not None  # a answers meanwhile
        store.release.set()
        wait_for(lambda: versions(group)["a"] == 2, timeout=20)


def test_with_redis_gone_each_instance_falls_back_to_its_own_root(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis
) -> None:
    roots = served
    with group_of(tmp_path, own_redis.url) as group:
        own_redis.kill()
        wait_for(lambda: not any(node.listener.connected for node in group), timeout=10)
        newer = write_checkpoint(roots["c"], 2, seed=5)
        os.utime(newer.path, (newer.path.stat().st_mtime + 5,) * 2)
        model = group.nodes["c"].model_for_request()  # the next request sees it
        assert model is not None and model.version == 2
        assert all(group.nodes[n].model_for_request().version == 1 for n in "ab")  # type: ignore[union-attr]
        own_redis.start()
        wait_for(lambda: all(node.listener.connected for node in group), timeout=10)
        assert versions(group) == {"a": 1, "b": 1, "c": 2}


def _metrics(group: NodeGroup) -> str:
    from prometheus_client import generate_latest

    return generate_latest(group.metrics.registry).decode()


# -- fks serve --------------------------------------------------------------------------------


def test_fks_serve_with_two_workers_reloads_and_rolls_back_each_instance_on_every_worker(
    tmp_path: Path, roots: dict[str, Path], redis_url: str
) -> None:
    """`fks serve --workers 2 --instance a --instance b`: a load of b reaches b on both
    workers (b's siblings, not a's: a's holder would refuse b's file), and `fks status`
    lists both instances and what each node serves."""
    write_checkpoint(roots["a"], 1, seed=1)
    write_checkpoint(roots["b"], 1, seed=2)
    root = tmp_path / "models" / "{instance}"
    with fks_serve(tmp_path, root, redis_url, "--workers", "2", "--instance", "a", "--instance",
                   "b", FKS_DEFAULT_DIR=str(tmp_path / "default" / "{instance}"),
                   FKS_CACHE_DIR=str(tmp_path / "cache")) as host:  # fmt: skip
        url = f"http://{host}"
        nodes = redis.Redis.from_url(redis_url)
        wait_for(lambda: all(len(nodes.hkeys(f"fks:{i}:nodes")) == 2 for i in "ab"), timeout=30)
        write_checkpoint(roots["b"], 2, seed=3)
        loaded = httpx.post(url + "/v2/repository/models/b/load", timeout=30)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json() == {"name": "b", "version": "2", "state": "READY"}
        for _ in range(8):  # whichever worker answers, both serve b's version 2 and a's 1
            assert httpx.get(url + "/v2/models/b").json()["versions"][0] == "2"
            assert httpx.get(url + "/v2/models/a").json()["versions"] == ["1"]
            assert httpx.post(url + "/sac/predict", json={"state": STATE}).json()["version"] == 1
        b_keys = RedisKeys("b")
        wait_for(lambda: [n.entry["version"] for n in read_nodes(nodes, b_keys)] == [2, 2])
        index = httpx.post(url + "/v2/repository/index").json()
        assert [(m["name"], m["state"]) for m in index] == [("a", "READY"), ("b", "READY")]
        status = subprocess.run(
            [sys.executable, "-m", "fks", "status", "--instance", "a", "--instance", "b",
             "--redis-url", redis_url, "--json"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        reports = json.loads(status)["instances"]
        assert [r["instance_id"] for r in reports] == ["a", "b"]
        assert sorted(n["version"] for n in reports[1]["nodes"]) == [2, 2]
        assert all(n["instances"] == ["a", "b"] for r in reports for n in r["nodes"])
        text = subprocess.run(
            [sys.executable, "-m", "fks", "status", "--redis-url", redis_url],
            capture_output=True, text=True, timeout=30, check=True,
            env={**os.environ, "FKS_INSTANCE_IDS": "a,b"},
        ).stdout  # fmt: skip
        assert "instance a  (channel fks:a:model_checkpoints)" in text
        assert "instance b  (channel fks:b:model_checkpoints)" in text
        assert "instances: a, b" in text


@pytest.mark.parametrize("subscriptions", ["shared", "per-instance"])
def test_a_flood_past_redis_output_buffer_on_one_channel(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis, subscriptions: str
) -> None:
    """~130 MB of oversized messages on a's channel, then a message targeted at b's node
    (which :latest never carries). Redis closes the subscriber that cannot keep up
    (client-output-buffer-limit pubsub, 32 MB by default). A reader fast enough to keep up
    with the 65 KiB messages (CI's machine was) is still closed by the flood's last message,
    33 MB alone, so the test never depends on the reader's speed. Shared (SPEC §13's one
    connection): every instance reconnects and catches up, and b's next broadcast message is
    applied. Per instance
    (FKS_SUBSCRIPTIONS=per-instance): only a's connection is closed, and b applies even the
    targeted message that came right behind the flood."""
    roots = served
    with group_of(tmp_path, own_redis.url, ids="a,b", subscriptions=subscriptions) as group:
        b = group.nodes["b"]
        client = own_redis.client()
        targeted = write_checkpoint(roots["b"], 2, seed=4)
        pipe = client.pipeline(transaction=False)
        for _ in range(2000):
            pipe.publish("fks:a:model_checkpoints", b"x" * (65 * 1024 + 1))
        pipe.publish("fks:a:model_checkpoints", b"x" * (33 * 1024 * 1024))
        message = CheckpointNotification(
            model_path=str(targeted.path), version=2, saved_at=datetime.now(UTC),
            nodes=(b.node_id,),
        )  # fmt: skip
        pipe.publish("fks:b:model_checkpoints", message.to_json())
        pipe.execute()
        # every publication is in the subscribers' buffers once execute() returns: a's
        # connection was closed (once, or again if it was back before the flood's end)
        wait_for(lambda: group.first.listener.sessions > 1, timeout=20)
        wait_for(lambda: all(node.listener.connected for node in group), timeout=10)
        if subscriptions == "per-instance":
            wait_for(lambda: versions(group)["b"] == 2, timeout=10)
            assert b.listener.sessions == 1  # b's own connection never closed
        else:  # the one connection: b's subscription was closed with a's, each time
            wait_for(lambda: b.listener.sessions == group.first.listener.sessions, timeout=10)
        newer = write_checkpoint(roots["b"], 3, seed=5)
        applied(newer.path, 3, "b", own_redis.url)
        assert versions(group) == {"a": 1, "b": 3}
        client.close()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--instance", "solo"], "a,b", ["solo"]),
        (["--instance", "b", "--instance", "c"], "a,b", ["b", "c"]),
        ([], "a,b", ["a", "b"]),
        ([], "", ["default"]),
    ],
    ids=["one flag over the env", "two flags over the env", "the env", "neither"],
)
def test_the_command_lines_instances_win_over_the_environment(
    args: list[str], env: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fks.cli import _settings, build_parser

    monkeypatch.setenv("FKS_INSTANCE_IDS", env)
    for command in ("serve", "status"):
        parsed = build_parser().parse_args([command, *args])
        assert _settings(parsed).instances == expected, command


@pytest.mark.parametrize("ids", ["a,,b", ",", "a,", " , a"])
def test_an_empty_instance_id_is_refused(ids: str) -> None:
    with pytest.raises(ValueError, match="invalid instance_id ''"):
        Settings(instance_ids=ids)


def test_fks_serve_refuses_an_empty_or_repeated_instance_with_exit_2(tmp_path: Path) -> None:
    for args, said in (
        (["--instance", "a", "--instance", ""], "invalid instance_id ''"),
        (["--instance", "a", "--instance", "a"], "instance a is named more than once"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fks", "serve", "--port", "0", *args],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0"},
        )  # fmt: skip
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback


def test_one_instance_commands_never_read_fks_instance_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fks notify/rollout/train name one instance (--instance, else FKS_INSTANCE_ID): a
    server's FKS_INSTANCE_IDS in the same environment neither redirects nor breaks them."""
    from fks.cli import _settings, build_parser

    monkeypatch.setenv("FKS_INSTANCE_IDS", "a,,b")  # not even valid
    monkeypatch.setenv("STAT_PAIR_RL_DIR", "/srv/models")  # no {instance}
    monkeypatch.setenv("FKS_INSTANCE_ID", "solo")
    for argv, expected in ((["notify", "/x", "--instance", "a"], "a"), (["notify", "/x"], "solo"),
                           (["rollout", "/x"], "solo"), (["train"], "solo")):  # fmt: skip
        settings = _settings(build_parser().parse_args(argv))
        assert (settings.instance_id, settings.instances) == (expected, [expected]), argv
    with pytest.raises(ValueError, match="invalid instance_id ''"):
        _settings(build_parser().parse_args(["notify", "/x", "--instance", ""]))


def test_ready_once_every_instance_serves_and_a_probe_looks_at_the_disk(
    tmp_path: Path, roots: dict[str, Path], redis_url: str
) -> None:
    """/v2/health/ready is 400 while one instance has nothing; a checkpoint put into that
    instance's root (announced to nobody) makes a later probe 200 without any request to it
    (a probe asks for a look at the disk at most once a second and never waits for it)."""
    from fastapi.testclient import TestClient

    from subscriber import create_app

    write_checkpoint(roots["b"], 1)
    settings = Settings(instance_ids="a,b", redis_url=redis_url,
                        model_dir=tmp_path / "models" / "{instance}",
                        default_model_dir=tmp_path / "default" / "{instance}",
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with TestClient(create_app(settings)) as client:
        assert client.get("/v2/health/ready").status_code == 400
        assert client.get("/v2/models/b/ready").status_code == 200
        write_checkpoint(roots["a"], 1)
        wait_for(lambda: client.get("/v2/health/ready").status_code == 200, every=0.1)
        loaded = client.post("/v2/repository/models/b/load")
        assert loaded.status_code == 200 and loaded.headers["X-FKS-Workers"]


@pytest.mark.parametrize("subscriptions", ["shared", "per-instance"])
def test_redis_losing_its_data_under_the_connection_is_found_for_each_instance(
    tmp_path: Path, served: dict[str, Path], own_redis: EmbeddedRedis, subscriptions: str
) -> None:
    """Both instances serve v3; FLUSHALL while the node stays subscribed; a new trainer's
    checkpoint for b is allocated v1 (stale by its number). b's heartbeat finds :epoch gone
    and b serves it (announced again above v3); a keeps its v3 and nothing of a moves."""
    with group_of(tmp_path, own_redis.url, ids="a,b", subscriptions=subscriptions,
                  heartbeat_seconds=0.2) as group:  # fmt: skip
        for name in ("a", "b"):
            applied(write_checkpoint(served[name], 3, seed=3).path, 3, name, own_redis.url)
        client = own_redis.client()
        wait_for(lambda: all(client.exists(RedisKeys(n).epoch) for n in ("a", "b")), timeout=5)
        new = write_checkpoint(served["b"], 0, name="after_loss.pt", seed=11)
        with heartbeats_held(*group):  # the trainer publishes before the nodes' next look
            client.flushall()
            result = notify_checkpoint(new.path, instance_id="b", redis_url=own_redis.url)
        assert result.notification is not None and result.notification.version == 1
        b = group.nodes["b"]
        wait_for(lambda: b.holder.current().sha256 == new.sha256, timeout=10)  # type: ignore[union-attr]
        assert versions(group)["a"] == 3 and (versions(group)["b"] or 0) > 3
        assert group.first.listener.sessions == 1  # found without a reconnect
        client.close()
