"""`fks serve --workers 2`: two uvicorn workers on one port, each its own node (SPEC §11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from common import RedisKeys
from fks.redis_server import free_port
from publisher import notify_checkpoint
from tests.helpers import wait_for, write_checkpoint

KEYS = RedisKeys("default")
WORKERS = {"wk-w0", "wk-w1"}


@pytest.mark.slow
def test_two_workers_are_two_nodes_that_both_swap_and_ack(
    tmp_path: Path, model_root: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """Each worker registers as <FKS_NODE_ID>-w<slot>, subscribes and loads on its own:
    `wait_for="all"` counts both and both apply; /metrics names the worker that answered
    (header and fks_node_info); SIGTERM removes both entries."""
    write_checkpoint(model_root, 1)
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
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                    r = client.get("/metrics")  # a fresh connection each time
                node = r.headers["x-fks-node"]
                assert f'fks_node_info{{node="{node}"' in r.text
                assert "fks_model_version 2.0" in r.text
                seen.add(node)
                return seen == WORKERS

            wait_for(both_answered, timeout=20, every=0.01)
        finally:
            proc.terminate()
            log.close()
        assert proc.wait(20) in (0, -15)
    assert redis_client.hgetall(KEYS.nodes) == {}
