"""The publisher's one retry after a failover keeps the outcomes honest (SPEC §10): a try
that may have published is retried with the same message and version, and the result never
says not_sent when something may have reached Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from publisher import CheckpointNotifier
from tests.helpers import write_checkpoint


def _flaky(notifier: CheckpointNotifier, *, run_first: bool, fail_second: bool) -> list[str]:
    """Make the publish script lose its reply once (after running it, or before), and the
    retry fail too if asked; returns the versions it was asked to publish."""
    real = notifier._publish
    asked: list[str] = []

    def publish(**kwargs: Any) -> Any:
        asked.append(kwargs["args"][2])
        if len(asked) == 1:
            if run_first:
                real(**kwargs)
            raise redis.ConnectionError("Connection closed by server.")
        if fail_second:
            raise redis.ConnectionError("Error 111 connecting to the new master.")
        return real(**kwargs)

    notifier._publish = publish  # type: ignore[assignment]
    notifier._rediscover = lambda: None  # type: ignore[method-assign]
    return asked


def test_a_lost_reply_is_retried_with_the_same_version(
    redis_url: str, redis_client: redis.Redis, model_root: Path
) -> None:
    """The script ran but its reply was lost: one retry, same version, published; the
    version counter did not move on (no second version for one checkpoint)."""
    sub = redis_client.pubsub()
    sub.subscribe("fks:default:model_checkpoints")
    assert sub.get_message(timeout=2) is not None
    with CheckpointNotifier(redis_url) as notifier:
        asked = _flaky(notifier, run_first=True, fail_second=False)
        result = notifier.notify(write_checkpoint(model_root, 1).path)  # an allocated version
    assert result.outcome == "published" and notifier.retries == 1
    assert asked == ["1", "1"]
    assert redis_client.get("fks:default:model_checkpoints:version") == "1"
    latest = redis_client.get("fks:default:model_checkpoints:latest")
    assert latest is not None and json.loads(latest)["version"] == 1
    versions = []
    while (message := sub.get_message(timeout=0.3)) is not None:
        versions.append(json.loads(message["data"])["version"])
    assert versions == [1, 1]  # a node judges the repeated message once
    sub.close()


@pytest.mark.parametrize(("run_first", "outcome"), [(True, "unknown"), (False, "unknown")])
def test_when_the_retry_fails_too_the_result_stays_unknown(
    redis_url: str, model_root: Path, run_first: bool, outcome: str
) -> None:
    """A first try lost after sending, the retry refused at connect: unknown (it may have
    been published), never not_sent."""
    with CheckpointNotifier(redis_url) as notifier:
        _flaky(notifier, run_first=run_first, fail_second=True)
        result = notifier.notify(write_checkpoint(model_root, 1).path, version=5)
    assert result.outcome == outcome and not result.sent
    assert result.reason.startswith("unconfirmed:")
