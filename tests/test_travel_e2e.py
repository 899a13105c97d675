"""End to end, no shared disk (SPEC §9): a trainer and two serving nodes, each with its own
directory, share nothing but a redis-server and a bucket on a real S3-protocol server
(moto_server). Every checkpoint the trainer announces — uploaded, or as a Redis blob — is
served by both nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from common import RedisKeys
from fks.s3_server import MotoServer
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from publisher.upload import store_blob
from tests.helpers import wait_for, write_checkpoint

STATE = [0.05] * 28


@pytest.fixture
def start_node(
    redis_url: str, s3_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> Iterator[Callable[[str], ServerProcess]]:
    """A node with a directory of its own (empty), the bucket's prefix allowed."""
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        home = tmp_path / name
        env = {
            **s3_server.env,
            "REDIS_URL": redis_url,
            "STAT_PAIR_RL_DIR": str(home / "models"),
            "FKS_DEFAULT_DIR": str(home / "default"),
            "FKS_CACHE_DIR": str(home / "cache"),
            "FKS_MODEL_URLS": f"s3://{s3_bucket}/runs/,redis-blob:",
            "FKS_NODE_ID": name,
        }
        started.append(ServerProcess(env, log_path=tmp_path / f"{name}.log").start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def nodes(start_node: Callable[[str], ServerProcess]) -> list[ServerProcess]:
    return [start_node("node-a"), start_node("node-b")]


def info(server: ServerProcess) -> dict[str, object]:
    r = httpx.get(server.url + "/sac/model/info", timeout=5)
    return dict(r.json()) if r.status_code == 200 else {}


def test_every_checkpoint_announced_is_served_by_both_nodes(
    nodes: list[ServerProcess], redis_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    trainer_dir = tmp_path / "trainer"
    trainer_dir.mkdir()
    with CheckpointNotifier(redis_url) as notifier:
        for version in range(1, 7):
            saved = write_checkpoint(trainer_dir, version)
            if version % 2:
                result = notifier.notify(
                    saved.path, version=version, upload_to=f"s3://{s3_bucket}/runs/"
                )
                expected = f"s3://{s3_bucket}/runs/model_{version}.pt"
            else:
                result = notifier.notify(saved.path, version=version, transport="redis")
                expected = f"redis-blob:{saved.sha256}"
            assert result.sent, result.reason
            for node in nodes:
                wait_for(lambda n=node, v=version: info(n).get("version") == v, timeout=20)  # type: ignore[misc]
                served = info(node)
                assert served["sha256"] == saved.sha256 and served["origin"] == expected
                r = httpx.post(node.url + "/sac/predict", json={"state": STATE}, timeout=5)
                assert r.status_code == 200 and r.json()["version"] == version
    for name in ("node-a", "node-b"):
        home = tmp_path / name
        assert not (home / "models").exists() or not any((home / "models").iterdir())
        cached = sorted(p.name for p in (home / "cache").iterdir())
        assert len(cached) == 4 and all(not n.startswith(".") for n in cached)  # FKS_CACHE_KEEP


def test_a_node_started_later_with_an_empty_disk_serves_the_latest(
    start_node: Callable[[str], ServerProcess], redis_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Its catch-up on :latest names a URL: fetched at start, served before any request."""
    trainer_dir = tmp_path / "trainer"
    trainer_dir.mkdir()
    saved = write_checkpoint(trainer_dir, 7)
    with CheckpointNotifier(redis_url) as notifier:
        assert notifier.notify(saved.path, version=7, upload_to=f"s3://{s3_bucket}/runs/")
    late = start_node("node-late")
    served = info(late)
    assert served["version"] == 7 and served["sha256"] == saved.sha256
    assert served["source"] == "latest"


def test_a_blob_gone_from_redis_is_refused_at_once(
    start_node: Callable[[str], ServerProcess], redis_url: str, tmp_path: Path
) -> None:
    """A `redis-blob:` whose blob is gone (evicted, or past FKS_BLOB_KEEP) will not appear:
    the node acks `rejected blob_missing` at once, within the trainer's wait, and keeps
    serving (issue 24, `repro/wave2/f4_evicted_blob_silent.py`: it was retried for 10 s as
    a late file, and the trainer heard nothing)."""
    node = start_node("node-a")
    trainer_dir = tmp_path / "trainer"
    trainer_dir.mkdir()
    served, gone = write_checkpoint(trainer_dir, 1), write_checkpoint(trainer_dir, 2)
    client = redis.Redis.from_url(redis_url)
    with CheckpointNotifier(redis_url) as notifier:
        assert notifier.notify(served.path, version=1, transport="redis")
        wait_for(lambda: info(node).get("version") == 1, timeout=20)
        sha = store_blob(client, RedisKeys("default"), gone.path, max_bytes=1 << 26, keep=8)
        client.delete(RedisKeys("default").blob(sha))  # evicted before the node fetches it
        result = notifier.notify(
            f"redis-blob:{sha}", version=2, sha256=sha, wait_for="all", timeout=5
        )
    client.close()
    report = result.acks
    assert report is not None
    acks = [(a.node, a.outcome, a.reason) for a in report.acks]
    assert acks == [("node-a", "rejected", "blob_missing")] and report.silent == ()
    assert info(node)["version"] == 1
