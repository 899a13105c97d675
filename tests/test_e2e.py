"""End to end: a real uvicorn server process, a real redis-server, real HTTP over loopback."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from common import RedisKeys
from fks.redis_server import EmbeddedRedis, free_port
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint

STATE = [0.05] * 28


@pytest.fixture
def serve(model_root: Path, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(redis_url: str, **env: str) -> ServerProcess:
        base = {
            "REDIS_URL": redis_url,
            "STAT_PAIR_RL_DIR": str(model_root),
            "FKS_DEFAULT_DIR": str(tmp_path / "default"),
        }
        server = ServerProcess(base | env, log_path=tmp_path / "server.log").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def redis_mode(client: httpx.Client) -> bool:
    return bool(client.get("/sac/health").json()["redis_connected"])


def test_redis_cli_publish_reaches_the_next_predict(
    session_redis: EmbeddedRedis, redis_url: str, serve: Callable[..., ServerProcess],
    model_root: Path,
) -> None:  # fmt: skip
    """`redis-cli PUBLISH` of a minimal JSON swaps the model; predict reports the new one."""
    write_checkpoint(model_root, 1)
    server = serve(redis_url)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        wait_for(lambda: redis_mode(client), timeout=10)
        assert client.post("/sac/predict", json={"state": STATE}).json()["version"] == 1
        newer = write_checkpoint(model_root, 2)
        cli = session_redis.binary.with_name("redis-cli")
        message = json.dumps({"model_path": str(newer.path)})
        subprocess.run(
            [str(cli), "-p", str(session_redis.port), "PUBLISH", RedisKeys("default").channel,
             message],
            check=True, capture_output=True,
        )  # fmt: skip
        wait_for(
            lambda: client.post("/sac/predict", json={"state": STATE}).json()["version"] == 2,
            timeout=5,
        )
        info = client.get("/sac/model/info").json()
        assert info["path"] == str(newer.path) and info["source"] == "channel"


def test_no_request_fails_while_100_checkpoints_are_published(
    redis_url: str, serve: Callable[..., ServerProcess], model_root: Path
) -> None:
    """8 concurrent clients keep predicting while 100 versions are published: every response
    is 200, names the file of its own version (no mixing), and no client sees a version go
    backwards."""
    incoming = model_root / "incoming"
    incoming.mkdir()
    files = [write_checkpoint(incoming, v) for v in range(1, 101)]
    server = serve(redis_url)
    stop = threading.Event()
    seen: list[list[tuple[int, int, int, str]]] = [[] for _ in range(8)]

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                r = client.post("/sac/predict", json={"state": STATE})
                body = r.json() if r.status_code == 200 else {}
                seen[index].append(
                    (r.status_code, body.get("version", -1), body.get("generation", -1),
                     body.get("model_path", ""))
                )  # fmt: skip

    with httpx.Client(base_url=server.url) as probe, CheckpointNotifier(redis_url) as first:
        wait_for(lambda: redis_mode(probe), timeout=10)
        first.notify(files[0].path, version=1, sha256=files[0].sha256)
        wait_for(lambda: probe.get("/sac/ready").status_code == 200, timeout=10)
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        with CheckpointNotifier(redis_url) as notifier:
            for saved in files[1:]:
                assert notifier.notify(saved.path, version=saved.version, sha256=saved.sha256)
                time.sleep(0.02)
        with httpx.Client(base_url=server.url) as probe:
            wait_for(lambda: probe.get("/sac/model/info").json()["version"] == 100, timeout=10)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    responses = [r for client in seen for r in client]
    failures = [r for r in responses if r[0] != 200]
    assert failures == [] and len(responses) > 200
    served_versions = {r[1] for r in responses if r[1] > 0}
    assert len(served_versions) > 10, "clients should have seen many swaps"
    for _, version, _, path in responses:
        assert path == str(incoming / f"model_{version}.pt"), (version, path)
    for client in seen:
        generations = [g for status, _, g, _ in client if status == 200]
        assert generations == sorted(generations), "a client saw the generation go back"


def test_with_redis_down_the_next_request_of_every_route_sees_a_newer_file(
    serve: Callable[..., ServerProcess], model_root: Path
) -> None:
    """Redis away (the mtime fallback): after a newer checkpoint is written, the very next
    /sac/model/info, /sac/predict and /sac/predict/batch each answer with it."""
    write_checkpoint(model_root, 1)
    server = serve(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    routes = [
        ("GET", "/sac/model/info", None, "path"),
        ("POST", "/sac/predict", {"state": STATE}, "model_path"),
        ("POST", "/sac/predict/batch", {"states": [STATE, STATE]}, "model_path"),
    ]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/sac/model/info").json()["version"] == 1
        assert client.get("/sac/health").json()["mode"] == "mtime"
        for version, (method, route, body, path_field) in enumerate(routes, start=2):
            newer = write_checkpoint(model_root, version)
            answer = client.request(method, route, json=body).json()
            assert (answer["version"], answer[path_field]) == (version, str(newer.path)), route
