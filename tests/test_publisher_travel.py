"""The trainer's side of SPEC §9: upload_to= (a real S3 server), transport="redis" (a real
redis-server), and `fks notify --upload-to/--via`; a path that does not exist here says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from common import CheckpointNotification, RedisKeys, Settings
from common.stores import filesystem
from fks.cli import main
from publisher import CheckpointNotifier, notify_checkpoint
from tests.helpers import write_checkpoint

KEYS = RedisKeys("default")


def latest(client: redis.Redis) -> CheckpointNotification:
    raw = client.get(KEYS.latest)
    assert raw is not None
    return CheckpointNotification.from_message(raw)


def test_transport_redis_stores_the_bytes_and_announces_the_blob(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    saved = write_checkpoint(tmp_path, 1)
    result = notify_checkpoint(saved.path, version=1, redis_url=redis_url, transport="redis")
    assert result.sent and result.notification is not None
    assert result.notification.model_path == f"redis-blob:{saved.sha256}"
    assert result.notification.sha256 == saved.sha256
    raw = redis.Redis.from_url(redis_url).get(KEYS.blob(saved.sha256))
    assert raw == saved.path.read_bytes()
    assert latest(redis_client).model_path == f"redis-blob:{saved.sha256}"


def test_only_the_newest_blobs_are_kept_and_never_the_one_latest_names(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, blob_keep=3)
    saved = [write_checkpoint(tmp_path, v) for v in range(1, 7)]
    with CheckpointNotifier(settings=settings) as notifier:
        assert notifier.notify(saved[0].path, version=100, transport="redis")  # :latest
        for checkpoint in saved[1:]:  # older versions: :latest keeps naming saved[0]
            assert notifier.notify(checkpoint.path, version=checkpoint.version, transport="redis")
    stored = {s.sha256 for s in saved if redis_client.exists(KEYS.blob(s.sha256))}
    assert stored == {saved[0].sha256, *(s.sha256 for s in saved[-3:])}
    assert redis_client.zcard(KEYS.blobs) == 4


def test_a_file_over_the_blob_limit_is_refused(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    saved = write_checkpoint(tmp_path, 1)
    settings = Settings(redis_url=redis_url, blob_max_bytes=1000)
    with CheckpointNotifier(settings=settings) as notifier:
        result = notifier.notify(saved.path, transport="redis")
    assert result.outcome == "not_sent" and result.reason.startswith("too_large_for_blob")
    assert redis_client.get(KEYS.latest) is None and not redis_client.keys("*blob*")


def test_upload_to_puts_the_file_in_the_bucket_and_announces_its_url(
    redis_url: str, redis_client: redis.Redis, s3_bucket: str, tmp_path: Path
) -> None:
    saved = write_checkpoint(tmp_path, 4)
    result = notify_checkpoint(
        saved.path, version=4, redis_url=redis_url, upload_to=f"s3://{s3_bucket}/runs/a/"
    )
    assert result.sent and result.notification is not None
    url = f"s3://{s3_bucket}/runs/a/model_4.pt"
    assert result.notification.model_path == url and result.notification.sha256 == saved.sha256
    s3 = filesystem("s3")
    assert s3.cat_file(f"{s3_bucket}/runs/a/model_4.pt") == saved.path.read_bytes()
    assert s3.metadata(f"{s3_bucket}/runs/a/model_4.pt")["sha256"] == saved.sha256
    assert latest(redis_client).model_path == url


def test_fks_upload_to_is_the_default_prefix(
    redis_url: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FKS_UPLOAD_TO", f"s3://{s3_bucket}/default")
    saved = write_checkpoint(tmp_path, 5)
    result = notify_checkpoint(saved.path, redis_url=redis_url)
    assert result.notification is not None
    assert result.notification.model_path == f"s3://{s3_bucket}/default/model_5.pt"


def test_a_failed_upload_announces_nothing(
    redis_url: str, redis_client: redis.Redis, s3_bucket: str, tmp_path: Path
) -> None:
    saved = write_checkpoint(tmp_path, 1)
    result = notify_checkpoint(saved.path, redis_url=redis_url, upload_to="s3://no-such-bucket/x/")
    assert result.outcome == "not_sent" and result.reason.startswith("upload_failed")
    assert redis_client.get(KEYS.latest) is None


def test_travel_arguments_that_cannot_work_are_value_errors(tmp_path: Path) -> None:
    saved = write_checkpoint(tmp_path, 1)
    bad: list[dict[str, Any]] = [
        {"upload_to": "/srv/models"},
        {"upload_to": "https://store.example/x/"},
        {"upload_to": "s3://b/x/", "transport": "redis"},
        {"transport": "ftp"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            notify_checkpoint(saved.path, redis_url="redis://127.0.0.1:1/0", **kwargs)
    with pytest.raises(ValueError):
        notify_checkpoint("s3://b/x/model.pt", upload_to="s3://b/y/")


def test_a_url_is_announced_as_is(redis_url: str) -> None:
    sha = "ab" * 32
    result = notify_checkpoint("s3://bucket/prefix/model_9.pt", sha256=sha, redis_url=redis_url)
    assert result.notification is not None
    assert result.notification.model_path == "s3://bucket/prefix/model_9.pt"


def test_notify_of_a_path_that_is_not_here_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Redis down and no such file here: both are said; not "saved but not announced"."""
    code = main(["notify", "/no/such/file.pt", "--redis-url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not exist on this machine" in err and "may still exist on the" in err
    assert "saved but not announced" not in err


def test_notify_of_a_path_that_is_not_here_still_announces_it(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["notify", "/no/such/file.pt", "--redis-url", redis_url])
    err = capsys.readouterr().err
    assert code == 0 and "does not exist on this machine" in err


def test_cli_via_redis_and_upload_to(
    redis_url: str, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = write_checkpoint(tmp_path, 2)
    assert main(["notify", str(saved.path), "--via", "redis", "--redis-url", redis_url]) == 0
    sent = json.loads(capsys.readouterr().out)
    assert sent["model_path"] == f"redis-blob:{saved.sha256}"
    prefix = f"s3://{s3_bucket}/cli/"
    assert main(["notify", str(saved.path), "--upload-to", prefix, "--redis-url", redis_url]) == 0
    sent = json.loads(capsys.readouterr().out)
    assert sent["model_path"] == prefix + "model_2.pt" and sent["sha256"] == saved.sha256
    code = main(["notify", "/no/such.pt", "--via", "redis", "--redis-url", redis_url])
    assert code == 1 and "does not exist on this machine" in capsys.readouterr().err
