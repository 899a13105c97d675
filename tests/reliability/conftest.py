"""The reliability suite: real uvicorn and redis-server processes under load, faults and
bad input. Its figures are printed at the end of the session (and written as JSON to
$FKS_RELIABILITY_JSON); docs/RELIABILITY.md records a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fks.redis_server import EmbeddedRedis
from fks.server_process import ServerProcess
from tests.reliability.harness import FIGURES, Serve, dump_figures, start_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(dump_figures())


@pytest.fixture
def volatile_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of the test's own without persistence: a restart loses every key."""
    with EmbeddedRedis(persistent=False) as server:
        yield server


@pytest.fixture
def aof_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server with appendfsync always: kill -9 loses nothing, as in production."""
    with EmbeddedRedis(persistent=True) as server:
        yield server


@pytest.fixture
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Serve]:
    """Start real servers on a model root, as the instance the test module names in its
    ``INSTANCE``; all stopped afterwards."""
    instance: str = request.module.INSTANCE
    started: list[ServerProcess] = []

    def start(redis_url: str, root: Path, **env: str) -> ServerProcess:
        log = tmp_path / f"server{len(started)}.log"
        server = start_server(redis_url, root, log, **({"FKS_INSTANCE_ID": instance} | env))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
