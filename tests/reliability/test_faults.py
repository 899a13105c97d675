"""Faults with clients predicting throughout: no request fails, no checkpoint is missed.

Files the fallback should find go into the model root (tier 2); files only Redis should
deliver go into ``incoming/`` (inside the root, never scanned), so that "caught up after
Redis returned" is measured apart from the fallback.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import httpx
import redis

from common import RedisKeys
from fks.redis_server import EmbeddedRedis, free_port
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint
from tests.reliability.harness import Clients, record, start_server, wait_version

# CLIENT KILLs of the listener: 25 in make test (each one a reconnect and a catch-up that
# must not miss the publication right after it); make reliability: 100.
CLIENT_KILLS = int(os.environ.get("FKS_CLIENT_KILLS", "10"))
# Seconds Redis stays SIGSTOPped: 4 in make test (past the ~1.5 s it takes to notice the hang,
# and several 0.5 s reconnect attempts into a server that does not answer); make reliability: 10.
SIGSTOP_SECONDS = float(os.environ.get("FKS_SIGSTOP_SECONDS", "4"))


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "models"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    return root, incoming


def _connected(url: str) -> bool:
    try:
        return bool(httpx.get(url + "/sac/health", timeout=5).json()["redis_connected"])
    except httpx.HTTPError:
        return False


def _final(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/sac/model/info", timeout=5).json()["version"])


def _publish(url: str, path: Path, version: int) -> None:
    with CheckpointNotifier(url) as notifier:
        assert notifier.notify(path, version=version).sent


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(values) * 1e3, "max_ms": max(values) * 1e3}


def test_kill_9_and_restart_10_times(aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    root, incoming = _setup(tmp_path)
    write_checkpoint(root, 1)
    server = start_server(aof_redis.url, root, tmp_path / "server.log")
    fallback, catch_up, version = [], [], 1
    try:
        wait_for(lambda: _connected(server.url), timeout=15)
        with Clients(server.url, n=8, pause=0.002) as clients:
            for _ in range(10):
                aof_redis.kill()
                version += 1
                written = time.monotonic()
                write_checkpoint(root, version)
                fallback.append(wait_version(clients, version, written))
                aof_redis.start()
                version += 1
                restarted = time.monotonic()
                _publish(aof_redis.url, write_checkpoint(incoming, version).path, version)
                catch_up.append(wait_version(clients, version, restarted))
                wait_for(lambda: _connected(server.url), timeout=10)
        final = _final(server)
    finally:
        server.stop()
    missed = [v for v in range(1, version + 1) if clients.first_seen(v) is None]
    record(
        "fault: redis kill -9 + restart x10",
        requests=len(clients.responses), failed=len(clients.failures()) + len(clients.errors),
        fallback_serves_newer=_ms(fallback), caught_up_after_restart=_ms(catch_up),
        missed=len(missed), final_version=final, newest=version,
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert final == version and missed == []


def test_client_kill_repeatedly(aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """``FKS_CLIENT_KILLS`` times (25; 100 in ``make reliability``): the listener's connection
    is killed, a checkpoint published right after; each one is served, no request fails, and
    one subscriber is left."""
    root, incoming = _setup(tmp_path)
    write_checkpoint(root, 1)
    server = start_server(aof_redis.url, root, tmp_path / "server.log")
    admin = redis.Redis.from_url(aof_redis.url)
    caught, version = [], 1
    files = [write_checkpoint(incoming, 1, name=f"model_k{i}.pt") for i in range(3)]
    try:
        wait_for(lambda: _connected(server.url), timeout=15)
        with (
            Clients(server.url, n=8, pause=0.002) as clients,
            CheckpointNotifier(aof_redis.url) as pub,
        ):
            for i in range(CLIENT_KILLS):
                assert admin.client_kill_filter(_type="pubsub") >= 1
                version += 1
                killed = time.monotonic()
                saved = files[i % 3]
                assert pub.notify(saved.path, version=version, sha256=saved.sha256).sent
                caught.append(wait_version(clients, version, killed))
                wait_for(lambda: _connected(server.url), timeout=10)
        final = _final(server)
        subscribers = admin.pubsub_numsub(RedisKeys("default").channel)[0][1]
    finally:
        admin.close()
        server.stop()
    record(
        f"fault: CLIENT KILL of the listener x{CLIENT_KILLS}",
        requests=len(clients.responses), failed=len(clients.failures()) + len(clients.errors),
        served_after_kill_and_publish=_ms(caught), final_version=final, newest=version,
        subscribers_after=subscribers,
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert final == version and subscribers == 1


def test_sigstop_then_sigcont(aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """Redis SIGSTOPped for ``FKS_SIGSTOP_SECONDS`` (4; 10 in ``make reliability``), then
    SIGCONT: the fallback serves the newer file meanwhile, the node catches up after, no
    request fails."""
    root, incoming = _setup(tmp_path)
    write_checkpoint(root, 1)
    server = start_server(aof_redis.url, root, tmp_path / "server.log")
    try:
        wait_for(lambda: _connected(server.url), timeout=15)
        with Clients(server.url, n=8, pause=0.002) as clients:
            aof_redis.pause()
            stopped = time.monotonic()
            try:
                write_checkpoint(root, 2)
                fallback = wait_version(clients, 2, stopped, timeout=10)
                time.sleep(max(0.0, SIGSTOP_SECONDS - (time.monotonic() - stopped)))
            finally:
                aof_redis.resume()
            resumed = time.monotonic()
            _publish(aof_redis.url, write_checkpoint(incoming, 3).path, 3)
            catch_up = wait_version(clients, 3, resumed)
            wait_for(lambda: _connected(server.url), timeout=10)
        final = _final(server)
    finally:
        server.stop()
    record(
        f"fault: redis SIGSTOP {SIGSTOP_SECONDS:g} s",
        requests=len(clients.responses), failed=len(clients.failures()) + len(clients.errors),
        fallback_serves_newer_ms=fallback * 1e3, caught_up_after_sigcont_ms=catch_up * 1e3,
        final_version=final,
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert final == 3


def test_redis_never_started(tmp_path: Path) -> None:
    root, incoming = _setup(tmp_path)
    write_checkpoint(root, 1)
    port = free_port()
    server = start_server(f"redis://127.0.0.1:{port}/0", root, tmp_path / "server.log")
    try:
        with Clients(server.url, n=8, pause=0.002) as clients:
            written = time.monotonic()
            write_checkpoint(root, 2)
            fallback = wait_version(clients, 2, written)
            with EmbeddedRedis(port=port, persistent=False) as late:
                started = time.monotonic()
                wait_for(lambda: _connected(server.url), timeout=15)
                subscribed = time.monotonic() - started
                published = time.monotonic()
                _publish(late.url, write_checkpoint(incoming, 3).path, 3)
                delivered = wait_version(clients, 3, published)
                final = _final(server)
    finally:
        server.stop()
    record(
        "fault: redis never started, then started",
        requests=len(clients.responses), failed=len(clients.failures()) + len(clients.errors),
        fallback_serves_newer_ms=fallback * 1e3, subscribed_after_start_s=subscribed,
        notify_served_ms=delivered * 1e3, final_version=final,
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert final == 3
