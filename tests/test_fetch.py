"""The fetch seam: a remote reference → a verified file in the cache, or a reason; nothing
partial ever left in the cache (subscriber/fetching/fetch.py). No model is involved: bytes only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import fsspec
import pytest
import redis

from common.errors import CheckpointLoadError
from common.keys import RedisKeys
from common.remote import RemoteRef
from publisher.upload import store_blob
from subscriber.fetching.fetch import FetchOptions, fetch
from tests.http_store import HttpStore

PAYLOAD = b"PK" + os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def options(tmp_path: Path) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "cache", keep=3, timeout=10.0, retries=2)


def http_ref(url: str, sha256: str | None = SHA) -> RemoteRef:
    return RemoteRef(url, "http", "http", sha256)


def leftovers(options: FetchOptions) -> list[str]:
    return sorted(p.name for p in options.cache_dir.iterdir())


def test_a_fetched_checkpoint_lands_in_the_cache_under_its_hash(
    store: HttpStore, options: FetchOptions
) -> None:
    got = fetch(http_ref(store.put("model_1.pt", PAYLOAD)), options)
    assert got.path == options.cache_dir / f"{SHA}.pt" and got.path.read_bytes() == PAYLOAD
    assert (got.sha256, got.size, got.cached, got.attempts) == (SHA, len(PAYLOAD), False, 1)
    assert leftovers(options) == [f"{SHA}.pt"]


def test_a_cached_checkpoint_is_not_downloaded_again(
    store: HttpStore, options: FetchOptions
) -> None:
    url = store.put("model_1.pt", PAYLOAD)
    fetch(http_ref(url), options)
    again = fetch(http_ref(url), options)
    assert again.cached and store.requests["model_1.pt"] == 1


def test_a_cached_file_that_no_longer_hashes_to_its_name_is_fetched_again(
    store: HttpStore, options: FetchOptions
) -> None:
    url = store.put("model_1.pt", PAYLOAD)
    first = fetch(http_ref(url), options)
    first.path.write_bytes(b"rot")
    again = fetch(http_ref(url), options)
    assert not again.cached and again.path.read_bytes() == PAYLOAD


def test_wrong_bytes_are_never_kept(store: HttpStore, options: FetchOptions) -> None:
    url = store.put("model_1.pt", PAYLOAD, "wrong_bytes")
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(url), options)
    assert caught.value.reason == "sha256_mismatch" and leftovers(options) == []
    assert store.requests["model_1.pt"] == 1  # the same bytes would come again: no retry


def test_a_body_cut_short_is_retried_then_refused(store: HttpStore, options: FetchOptions) -> None:
    received: list[int] = []
    url = store.put("model_1.pt", PAYLOAD, "truncated")
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(url), options, on_bytes=received.append)
    assert caught.value.reason == "fetch_failed" and leftovers(options) == []
    assert store.requests["model_1.pt"] == 3  # 1 + FetchOptions.retries
    assert 0 < sum(received) <= 3 * (len(PAYLOAD) // 2)  # partial attempts are counted


def test_a_body_cut_short_without_a_length_fails_its_hash(
    store: HttpStore, options: FetchOptions
) -> None:
    url = store.put("model_1.pt", PAYLOAD[:1000], "no_length")
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(url), options)
    assert caught.value.reason == "sha256_mismatch" and leftovers(options) == []


def test_an_unavailable_store_is_retried(store: HttpStore, options: FetchOptions) -> None:
    url = store.put("model_1.pt", PAYLOAD, "fail_once")
    got = fetch(http_ref(url), options)
    assert got.attempts == 2 and got.path.read_bytes() == PAYLOAD


def test_a_missing_object_is_missing(store: HttpStore, options: FetchOptions) -> None:
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(store.url + "/nothing.pt"), options)
    assert caught.value.reason == "missing" and leftovers(options) == []


def test_a_declared_size_over_the_limit_is_refused_before_the_body(
    store: HttpStore, tmp_path: Path
) -> None:
    options = FetchOptions(cache_dir=tmp_path / "cache", max_bytes=100_000)
    received: list[int] = []
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(store.put("big.pt", PAYLOAD)), options, on_bytes=received.append)
    assert caught.value.reason == "too_large" and received == [] and leftovers(options) == []


def test_an_undeclared_stream_is_cut_at_the_limit(store: HttpStore, tmp_path: Path) -> None:
    """No Content-Length: the stream is stopped once past the limit, not read to its end."""
    big = os.urandom(8 << 20)
    options = FetchOptions(cache_dir=tmp_path / "cache", max_bytes=1 << 20)
    received: list[int] = []
    url = store.put("big.pt", big, "no_length")
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(url, hashlib.sha256(big).hexdigest()), options, on_bytes=received.append)
    assert caught.value.reason == "too_large" and leftovers(options) == []
    assert sum(received) <= (1 << 20) + (1 << 20)  # at most one chunk past the limit


def test_a_slow_store_is_bounded_by_the_timeout(store: HttpStore, tmp_path: Path) -> None:
    options = FetchOptions(cache_dir=tmp_path / "cache", timeout=0.3, retries=5)
    url = store.put("slow.pt", PAYLOAD * 4, "slow")  # ~20 chunks, 50 ms each
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(http_ref(url, hashlib.sha256(PAYLOAD * 4).hexdigest()), options)
    assert caught.value.reason == "fetch_failed" and leftovers(options) == []


def test_the_cache_keeps_the_newest_and_the_protected(
    store: HttpStore, options: FetchOptions
) -> None:
    blobs = [bytes([i]) * 1000 for i in range(6)]
    paths: list[Path] = []
    for i, data in enumerate(blobs):
        sha = hashlib.sha256(data).hexdigest()
        got = fetch(http_ref(store.put(f"m{i}.pt", data), sha), options, protect=paths[:1])
        paths.append(got.path)
        os.utime(got.path, (1_000 + i, 1_000 + i))  # distinct times on a coarse clock
    kept = {p.name for p in options.cache_dir.iterdir()}
    assert kept == {paths[0].name, *(p.name for p in paths[-3:])}


def test_an_unknown_suffix_is_sniffed(store: HttpStore, options: FetchOptions) -> None:
    got = fetch(http_ref(store.put("checkpoint", PAYLOAD)), options)
    assert got.path.suffix == ".pt"


def test_an_fsspec_url_is_fetched(options: FetchOptions) -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe_file("/bucket/prefix/model_1.pt", PAYLOAD)
    got = fetch(RemoteRef("memory://bucket/prefix/model_1.pt", "fsspec", "memory", SHA), options)
    assert got.path.read_bytes() == PAYLOAD
    other = "cd" * 32
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(RemoteRef("memory://bucket/prefix/none.pt", "fsspec", "memory", other), options)
    assert caught.value.reason == "missing"


def test_a_redis_blob_is_fetched_from_the_instance_redis(
    redis_url: str, tmp_path: Path, options: FetchOptions
) -> None:
    source = tmp_path / "model_1.pt"
    source.write_bytes(PAYLOAD * 8)  # 2.4 MB: three GETRANGE chunks
    client = redis.Redis.from_url(redis_url)
    sha = store_blob(client, RedisKeys("default"), source, max_bytes=64 << 20, keep=8)
    client.close()
    blob_options = FetchOptions(cache_dir=options.cache_dir, redis_url=redis_url)
    got = fetch(RemoteRef(f"redis-blob:{sha}", "blob", "redis-blob", sha), blob_options)
    assert got.path.read_bytes() == PAYLOAD * 8
    missing = "0" * 64
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(RemoteRef(f"redis-blob:{missing}", "blob", "redis-blob", missing), blob_options)
    assert caught.value.reason == "blob_missing"  # gone for good: not a late file


def test_an_unreachable_redis_is_a_failed_fetch(tmp_path: Path) -> None:
    options = FetchOptions(
        cache_dir=tmp_path / "cache", redis_url="redis://127.0.0.1:1/0", retries=1, timeout=5
    )
    with pytest.raises(CheckpointLoadError) as caught:
        fetch(RemoteRef(f"redis-blob:{SHA}", "blob", "redis-blob", SHA), options)
    assert caught.value.reason == "fetch_failed" and leftovers(options) == []
