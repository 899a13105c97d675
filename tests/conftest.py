"""Shared fixtures: a real redis-server per session (flushed per test), one per test when a
test kills or pauses it, and a temporary model root."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from common import Settings
from fks.redis_server import EmbeddedRedis
from fks.s3_server import MotoServer
from subscriber import ServingNode, create_app
from subscriber.pipeline.listener import ListenerTiming
from tests.helpers import new_dir
from tests.http_store import HttpStore


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n`` (``make test``), the long cases go first, so no worker is left
    running one alone at the end; a plain ``pytest`` keeps the file order. The ``story``
    modules go before them, in file order: their tests continue each other on one fleet, and
    ``--dist worksteal`` hands the first worker the head of the list, which it runs first
    (what other workers steal is taken from the tail of its queue)."""
    if getattr(config.option, "numprocesses", None):
        items.sort(
            key=lambda item: (
                item.get_closest_marker("story") is None,
                item.get_closest_marker("slow") is None,
            )
        )


@pytest.fixture(scope="session")
def session_redis() -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole session (not to be killed by tests)."""
    with EmbeddedRedis(persistent=False) as server:
        yield server


@pytest.fixture
def redis_url(session_redis: EmbeddedRedis) -> Iterator[str]:
    """URL of the session server, flushed before each test."""
    client = session_redis.client()
    client.flushall()
    client.close()
    yield session_redis.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real S3-protocol server (moto_server) for the session (not to be killed)."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log_path=log) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server, its endpoint and credentials in the env."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return bucket


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, free to kill, pause and restart."""
    server = EmbeddedRedis(persistent=True).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def model_root(tmp_path: Path) -> Path:
    return new_dir(tmp_path / "models")


@pytest.fixture
def incoming(model_root: Path) -> Path:
    """Inside the model root but never scanned: only Redis can bring these checkpoints."""
    return new_dir(model_root / "incoming")


@pytest.fixture
def store() -> Iterator[HttpStore]:
    """A loopback HTTP server of the test's own that serves checkpoints (tests/http_store.py)."""
    with HttpStore() as server:
        yield server


@pytest.fixture
def settings_for(model_root: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Settings confined to this test's model root, with the given overrides."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "model_dir": model_root,
            "default_model_dir": tmp_path / "default",
            "redis_url": "redis://127.0.0.1:1/0",
        }
        return Settings(**(base | overrides))

    return make


@pytest.fixture
def client_for(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., Any]]:
    """``with client_for(**overrides) as client``: a TestClient around create_app(settings)
    with the lifespan running."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        with TestClient(create_app(settings_for(**overrides))) as client:
            yield client

    yield make


FAST = ListenerTiming(backoff_initial=0.05, backoff_max=0.5)


@pytest.fixture
def start_node(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., ServingNode]]:
    """Start ServingNodes for a test; every one is stopped afterwards."""
    nodes: list[ServingNode] = []

    def start(redis_url: str, **overrides: Any) -> ServingNode:
        timing = overrides.pop("timing", FAST)
        node = ServingNode(settings_for(redis_url=redis_url, **overrides), timing=timing)
        nodes.append(node.start())
        return node

    yield start
    for node in nodes:
        node.stop()
