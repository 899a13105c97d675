"""`fks status --watch`: the status table redrawn in place (rich)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from fks.cli import main
from fks.redis_server import free_port
from subscriber import ServingNode
from tests.helpers import wait_for


def test_watch_redraws_the_table_with_every_node(
    redis_url: str,
    redis_client: redis.Redis,
    start_node: Callable[..., ServingNode],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each redraw shows the registry as it is then: a node that joins between two
    redraws appears, with its requests and errors since its last swap."""
    start_node(redis_url, node_id="w-1", heartbeat_seconds=0.1)
    wait_for(lambda: redis_client.hget("fks:default:nodes", "w-1"))
    args = ["status", "--watch", "--count", "1", "--redis-url", redis_url]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "w-1" in first and "w-2" not in first
    assert "requests" in first and "errors" in first
    start_node(redis_url, node_id="w-2", heartbeat_seconds=0.1)
    wait_for(lambda: redis_client.hget("fks:default:nodes", "w-2"))
    assert main([*args[:3], "3", "--interval", "0.05", *args[4:]]) == 0
    assert "w-2" in capsys.readouterr().out


def test_watch_survives_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    """No Redis: the error is drawn in place of the table, the watch goes on."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert (
        main(["status", "--watch", "--count", "2", "--interval", "0.01", "--redis-url", url]) == 0
    )
    assert "Redis unavailable" in capsys.readouterr().out
