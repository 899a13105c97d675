"""Shared fixtures: a real redis-server per session (flushed per test), one per test when a
test kills or pauses it, and a temporary model root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fks.redis_server import EmbeddedRedis


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
    root = tmp_path / "models"
    root.mkdir()
    return root
