"""`fks serve --workers 2`: two uvicorn workers on one port, each its own node (SPEC §11); an
operator's rollback or reload on the port acts on every worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from common import RedisKeys
from fks.redis_server import EmbeddedRedis, free_port
from publisher import notify_checkpoint
from tests.helpers import wait_for, write_checkpoint

KEYS = RedisKeys("default")
WORKERS = {"wk-w0", "wk-w1"}


@contextmanager
def two_workers(
    tmp_path: Path, model_root: Path, redis_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`fks serve --workers 2` (node id wk) on ``model_root``: the process and its URL;
    terminated afterwards, and it must then exit cleanly."""
    port = free_port()
    env = {
        **os.environ, "REDIS_URL": redis_url, "STAT_PAIR_RL_DIR": str(model_root),
        "FKS_DEFAULT_DIR": str(tmp_path / "default"), "FKS_NODE_ID": "wk",
        "FKS_HEARTBEAT_SECONDS": "0.3",
    }  # fmt: skip
    args = [sys.executable, "-m", "fks", "serve", "--workers", "2", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    with subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT) as proc:
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            log.close()
        assert proc.wait(20) in (0, -15)


@pytest.mark.slow
def test_two_workers_are_two_nodes_that_both_swap_and_ack(
    tmp_path: Path, model_root: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """Each worker registers as <FKS_NODE_ID>-w<slot>, subscribes and loads on its own:
    `wait_for="all"` counts both and both apply; /metrics names the worker that answered
    (header and fks_node_info); SIGTERM removes both entries."""
    write_checkpoint(model_root, 1)
    with two_workers(tmp_path, model_root, redis_url) as (proc, url):

        def registered() -> set[str]:
            entries = {k: json.loads(v) for k, v in redis_client.hgetall(KEYS.nodes).items()}
            return {str(k) for k, e in entries.items() if e.get("version") == 1}

        wait_for(lambda: registered() == WORKERS, timeout=60, every=0.1)
        pids = {json.loads(redis_client.hget(KEYS.nodes, n) or "{}")["pid"] for n in WORKERS}
        assert len(pids) == 2 and proc.pid not in pids
        newer = write_checkpoint(model_root, 2)
        result = notify_checkpoint(newer.path, version=2, redis_url=redis_url, wait_for="all")
        assert result.acks is not None and result.acks.ok, result.acks
        assert set(result.acks.expected) == WORKERS
        assert {a.node for a in result.acks.applied} == WORKERS

        seen: set[str] = set()

        def both_answered() -> bool:
            with httpx.Client(base_url=url) as client:
                r = client.get("/metrics")  # a fresh connection each time
            node = r.headers["x-fks-node"]
            assert f'fks_node_info{{node="{node}"' in r.text
            assert 'fks_model_version{model="default"} 2.0' in r.text
            seen.add(node)
            return seen == WORKERS

        wait_for(both_answered, timeout=20, every=0.01)
    assert redis_client.hgetall(KEYS.nodes) == {}


def by_worker(url: str, metric: str, timeout: float = 20) -> dict[str, str]:
    """``metric``'s value on each worker of the port (fresh connections until both answered)."""
    seen: dict[str, str] = {}

    def both() -> bool:
        try:
            with httpx.Client(base_url=url, timeout=5) as client:
                r = client.get("/metrics")
        except httpx.TransportError:  # not listening yet
            return False
        # a series of the node, or of its model (model="default", SPEC §13)
        found = re.search(rf'^{metric}(?:{{model="default"}})? (\S+)$', r.text, re.MULTILINE)
        seen[r.headers["x-fks-node"]] = found.group(1) if found else ""
        return set(seen) == WORKERS

    wait_for(both, timeout=timeout, every=0.01)
    return seen


@pytest.mark.slow
def test_rollback_and_reload_on_the_port_act_on_every_worker(
    tmp_path: Path, model_root: Path, own_redis: EmbeddedRedis
) -> None:
    """POST /sac/model/rollback on the port rolls every worker back before it answers 200,
    with Redis down too (the workers' own channel); it sticks: a second one is 409 on every
    worker and Redis's return does not undo it. POST /sac/model/reload puts every worker on
    the newest checkpoint."""
    write_checkpoint(model_root, 1)
    with two_workers(tmp_path, model_root, own_redis.url) as (_, url):
        started = by_worker(url, "fks_model_version", timeout=120)  # after their start-up
        assert started == dict.fromkeys(WORKERS, "1.0")
        two = write_checkpoint(model_root, 2)
        result = notify_checkpoint(two.path, version=2, redis_url=own_redis.url, wait_for=2)
        assert result.acks is not None and len(result.acks.applied) == 2, result.acks
        own_redis.stop()
        wait_for(lambda: by_worker(url, "fks_listener_connected") == dict.fromkeys(
            WORKERS, "0.0"), timeout=20)  # fmt: skip

        with httpx.Client(base_url=url, timeout=10) as client:
            r = client.post("/sac/model/rollback")
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert by_worker(url, "fks_model_version") == dict.fromkeys(WORKERS, "1.0")
        assert set(r.headers["x-fks-workers"].split(",")) == WORKERS
        for _ in range(6):  # the fallback's look: model_2.pt is older than the rollback
            with httpx.Client(base_url=url, timeout=10) as client:
                predicted = client.post("/sac/predict", json={"state": [0.05] * 28})
            assert predicted.json()["version"] == 1

        with httpx.Client(base_url=url, timeout=10) as client:
            again = client.post("/sac/model/rollback")
        assert again.status_code == 409, again.text
        own_redis.start()  # :latest still holds version 2
        wait_for(lambda: by_worker(url, "fks_listener_connected") == dict.fromkeys(
            WORKERS, "1.0"), timeout=20)  # fmt: skip
        assert by_worker(url, "fks_model_version") == dict.fromkeys(WORKERS, "1.0")

        three = write_checkpoint(model_root, 3)
        with httpx.Client(base_url=url, timeout=60) as client:
            r = client.post("/sac/model/reload")
        assert r.status_code == 200 and r.json()["path"] == str(three.path), r.text
        assert by_worker(url, "fks_model_version") == dict.fromkeys(WORKERS, "3.0")
