"""A node serves remote checkpoints through the fetch seam and keeps its promises for them:
judged without I/O, fetched on the lane, verified, remembered when bad (subscriber/model/holder.py,
subscriber/model/plan.py, subscriber/pipeline/decider.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
import redis

from common import CheckpointNotification, RedisKeys, Settings
from publisher import notify_checkpoint
from publisher.upload import store_blob
from subscriber import ServingNode
from subscriber.model.holder import ModelHolder
from subscriber.pipeline.decider import Decider
from tests.helpers import new_dir, wait_for, write_checkpoint
from tests.http_store import HttpStore


@pytest.fixture
def trainer_dir(tmp_path: Path) -> Path:
    """The trainer's own disk: nothing the node can open."""
    return new_dir(tmp_path / "trainer")


@pytest.fixture
def node(
    settings_for: Callable[..., Settings], store: HttpStore, tmp_path: Path
) -> Callable[..., Decider]:
    def make(**overrides: object) -> Decider:
        base: dict[str, object] = {
            "cache_dir": tmp_path / "node-cache",
            "model_urls": store.url + "/",
            "fetch_retries": 0,
        }
        settings = settings_for(**(base | overrides))
        return Decider(ModelHolder(settings), remote_url=settings.model_url)

    return make


def message(
    url: str, sha256: str | None, version: int = 0, **extra: object
) -> CheckpointNotification:
    return CheckpointNotification.model_validate(
        {"model_path": url, "sha256": sha256, "version": version, **extra}
    )


def publish(store: HttpStore, trainer_dir: Path, version: int) -> tuple[str, str]:
    saved = write_checkpoint(trainer_dir, version)
    return store.put(f"model_{version}.pt", saved.path.read_bytes()), saved.sha256


def test_a_remote_checkpoint_is_fetched_verified_and_served(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path, tmp_path: Path
) -> None:
    decider = node()
    url, sha = publish(store, trainer_dir, 1)
    outcome = decider.apply(message(url, sha, 1))
    assert outcome.applied and outcome.model is not None
    model = outcome.model
    assert model.origin == url and model.sha256 == sha and model.version == 1
    assert model.path == (tmp_path / "node-cache" / f"{sha}.pt").resolve()
    metrics = decider.holder.metrics
    assert metrics.fetch_bytes._value.get() == model.path.stat().st_size
    assert metrics.fetch_seconds._sum.get() > 0


def test_a_remote_url_outside_the_prefixes_is_never_requested(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path
) -> None:
    decider = node(model_urls=store.url + "/allowed/")
    url, sha = publish(store, trainer_dir, 1)
    outcome = decider.apply(message(url, sha, 1))
    assert outcome.reason == "outside_roots" and store.requests["model_1.pt"] == 0
    assert decider.apply(message(url, None, 1)).reason == "outside_roots"
    decider = node()
    assert decider.apply(message(url, None, 1)).reason == "unverifiable_remote"
    assert decider.apply(message("http://10.1.2.3/model_1.pt", sha, 1)).reason == (
        "unsupported_scheme"
    )
    assert store.requests["model_1.pt"] == 0
    rejections = decider.holder.metrics.rejections
    assert rejections.labels("unverifiable_remote")._value.get() == 1


def test_an_unversioned_remote_checkpoint_is_newer_iff_its_hash_differs(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path
) -> None:
    decider = node()
    url_1, sha_1 = publish(store, trainer_dir, 1)
    url_2, sha_2 = publish(store, trainer_dir, 2)
    assert decider.apply(message(url_1, sha_1)).applied
    assert decider.apply(message(url_1, sha_1)).reason == "same_file"
    assert decider.apply(message(url_2, sha_2)).applied
    assert decider.apply(message(url_1, sha_1)).applied  # another hash: a decision now
    assert store.requests["model_1.pt"] == 1  # served again from the cache


def test_wrong_bytes_are_never_served_and_not_fetched_again_at_once(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path
) -> None:
    decider = node()
    saved = write_checkpoint(trainer_dir, 1)
    url = store.put("model_1.pt", saved.path.read_bytes(), "wrong_bytes")
    assert decider.apply(message(url, saved.sha256, 1)).reason == "sha256_mismatch"
    assert decider.holder.current() is None
    assert decider.apply(message(url, saved.sha256, 2)).reason == "known_bad"
    assert store.requests["model_1.pt"] == 1


def test_bytes_that_fail_to_load_are_remembered_by_their_hash(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path
) -> None:
    """Verified bytes that are no checkpoint fail once; announced again, elsewhere, not
    fetched or loaded again."""
    import hashlib

    junk = b"PK" + b"\x00" * 5000
    sha = hashlib.sha256(junk).hexdigest()
    decider = node()
    first = decider.apply(message(store.put("model_1.pt", junk), sha, 1))
    assert not first.applied and decider.holder.current() is None
    again = decider.apply(message(store.put("model_2.pt", junk), sha, 2))
    assert again.reason == "known_bad" and store.requests["model_2.pt"] == 0


def test_a_missing_object_is_retried_like_a_late_file(
    node: Callable[..., Decider], store: HttpStore, trainer_dir: Path
) -> None:
    decider = node()
    saved = write_checkpoint(trainer_dir, 1)
    from subscriber.model.plan import Candidate

    batch = [
        Candidate.from_notification(message(store.url + "/model_1.pt", saved.sha256, 1), "channel")
    ]
    result = decider.apply_batch(batch)
    assert result.outcome is None and [c.path for c in result.missing] == [batch[0].path]
    store.put("model_1.pt", saved.path.read_bytes())
    assert decider.apply_batch(result.missing).outcome is not None


def test_a_blob_is_served_from_the_instance_redis(
    node: Callable[..., Decider], redis_url: str, trainer_dir: Path
) -> None:
    saved = write_checkpoint(trainer_dir, 3)
    client = redis.Redis.from_url(redis_url)
    sha = store_blob(client, RedisKeys("default"), saved.path, max_bytes=1 << 26, keep=8)
    client.close()
    refused = node(redis_url=redis_url).apply(message(f"redis-blob:{sha}", None, 3))
    assert (refused.applied, refused.reason) == (False, "outside_roots")  # blobs are opt-in
    decider = node(redis_url=redis_url, model_urls="redis-blob:")
    outcome = decider.apply(message(f"redis-blob:{sha}", None, 3))
    assert outcome.applied and outcome.model is not None and outcome.model.sha256 == sha


def test_the_remote_tier_serves_the_newest_object_and_notices_a_newer_one(
    node: Callable[..., Decider], trainer_dir: Path
) -> None:
    memory = fsspec.filesystem("memory")
    for version in (1, 2):
        saved = write_checkpoint(trainer_dir, version)
        memory.pipe_file(f"/tier/models/model_{version}.pt", saved.path.read_bytes())
        time.sleep(0.01)
    memory.pipe_file("/tier/models/notes.txt", b"not a checkpoint")
    decider = node(model_url="memory://tier/models/")
    outcome = decider.check_remote()
    assert outcome is not None and outcome.applied and outcome.model is not None
    assert outcome.model.origin == "memory://tier/models/model_2.pt"
    assert outcome.model.source == "remote"
    assert decider.check_remote() is None  # the same object: nothing to do
    time.sleep(0.01)
    saved = write_checkpoint(trainer_dir, 3)
    memory.pipe_file("/tier/models/model_3.pt", saved.path.read_bytes())
    newer = decider.check_remote()
    assert newer is not None and newer.model is not None
    assert newer.model.origin == "memory://tier/models/model_3.pt"
    memory.rm("/tier", recursive=True)


def test_while_redis_is_away_a_node_serves_the_newest_upload_of_its_remote_tier(
    start_node: Callable[..., ServingNode], s3_bucket: str, trainer_dir: Path, tmp_path: Path
) -> None:
    """STAT_PAIR_RL_URL on a real S3 server: Redis is unreachable, the trainer's uploads are
    not announced, and the node still serves each newest one, listed by its applier."""
    down = "redis://127.0.0.1:1/0"
    prefix = f"s3://{s3_bucket}/tier/"
    node = start_node(
        down,
        model_url=prefix,
        cache_dir=tmp_path / "node-cache",
        remote_poll_seconds=0.2,
        fallback_poll_seconds=0.1,
    )
    assert node.holder.current() is None
    for version in (1, 2):
        saved = write_checkpoint(trainer_dir, version)
        result = notify_checkpoint(saved.path, version=version, redis_url=down, upload_to=prefix)
        assert result.outcome == "not_sent"  # uploaded, not announced
        url = f"{prefix}model_{version}.pt"
        wait_for(lambda u=url: getattr(node.holder.current(), "origin", None) == u, 15)  # type: ignore[misc]
        model = node.holder.current()
        assert model is not None and model.sha256 == saved.sha256 and model.source == "remote"
