"""The clients behind the fetch seam: one byte stream per kind of :class:`RemoteRef`.

:func:`open_source` yields a :class:`Source`: the size the store declares (``Content-Length``,
the object's size, ``STRLEN``), when it does, and an iterator of chunks. What goes wrong is
sorted here, once:

- the object is not there (404, no such key or bucket, no blob): ``missing`` — not a failure
  of the checkpoint; the notification is retried a while, as a local file that is late;
- the store could not be reached or broke off (connection refused or reset, a timeout, a 5xx,
  a body cut short): :class:`Transient`, retried by ``subscriber/fetch.py`` with backoff;
- anything else the store answers (403, a redirect, another 4xx): ``fetch_failed``.

``https`` (and ``http`` to loopback) uses httpx, never following redirects (a redirect could
leave the allowed prefixes); fsspec protocols use ``fsspec.filesystem(protocol)`` with the
standard credentials and endpoint of the environment (``AWS_ENDPOINT_URL``, …); blobs are read
from the instance's Redis with ``GETRANGE`` in chunks, measured with ``STRLEN`` first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from common.errors import CheckpointLoadError
from common.redis_connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts
from common.remote import RemoteRef
from common.settings import keys_for
from common.stores import STALL_SECONDS, filesystem

__all__ = ["CHUNK_BYTES", "Source", "Transient", "open_source"]

CHUNK_BYTES = 1 << 20
HTTP_CHUNK_BYTES = 64 << 10
_RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transient(Exception):
    """The store could not be reached or broke off: worth another try."""


@dataclass
class Source:
    size: int | None
    chunks: Iterator[bytes]


@contextlib.contextmanager
def open_source(
    ref: RemoteRef, *, timeout: float, redis_url: str = "", instance_id: str = "default"
) -> Iterator[Source]:
    """The bytes of ``ref`` as chunks; raises CheckpointLoadError or :class:`Transient`."""
    if ref.kind == "http":
        with _http(ref, timeout) as source:
            yield source
    elif ref.kind == "blob":
        with _blob(ref, timeout, redis_url, instance_id) as source:
            yield source
    else:
        with _fsspec(ref, timeout) as source:
            yield source


@contextlib.contextmanager
def _http(ref: RemoteRef, timeout: float) -> Iterator[Source]:
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(min(timeout, STALL_SECONDS), pool=timeout),
                follow_redirects=False,
            ) as client,
            client.stream("GET", ref.url) as response,
        ):
            status = response.status_code
            if status in (404, 410):
                raise CheckpointLoadError(f"{ref.url}: {status}, no such object", reason="missing")
            if status in _RETRIED_STATUS:
                raise Transient(f"{ref.url}: HTTP {status}")
            if status != 200:
                raise CheckpointLoadError(
                    f"{ref.url}: HTTP {status} (redirects are not followed)",
                    reason="fetch_failed",
                )
            length = response.headers.get("content-length")
            size = int(length) if length is not None and length.isdigit() else None
            yield Source(size, _http_chunks(response))
    except httpx.HTTPError as exc:  # connect, read, write, pool, protocol (a body cut short)
        raise Transient(f"{ref.url}: {type(exc).__name__}: {exc}") from None


def _http_chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_raw(HTTP_CHUNK_BYTES)  # the bytes as sent: no decoding


@contextlib.contextmanager
def _blob(ref: RemoteRef, timeout: float, redis_url: str, instance_id: str) -> Iterator[Source]:
    assert ref.sha256 is not None
    key = keys_for(instance_id, redis_url).blob(ref.sha256)
    bound = min(timeout, STALL_SECONDS)
    lazy = LazyRedis(redis_url, Timeouts(bound, bound))
    try:
        try:
            client = lazy.get()
            size = int(client.strlen(key))
        except REDIS_ERRORS as exc:
            raise Transient(f"{ref.url}: Redis: {type(exc).__name__}: {exc}") from None
        if size == 0:
            raise CheckpointLoadError(f"{ref.url}: no such blob in Redis", reason="missing")
        yield Source(size, _blob_chunks(ref, client, key, size))
    finally:
        lazy.close()


def _blob_chunks(ref: RemoteRef, client: RedisClient, key: str, size: int) -> Iterator[bytes]:
    for start in range(0, size, CHUNK_BYTES):
        try:
            chunk = client.getrange(key, start, min(start + CHUNK_BYTES, size) - 1)
        except REDIS_ERRORS as exc:
            raise Transient(f"{ref.url}: Redis: {type(exc).__name__}: {exc}") from None
        if not isinstance(chunk, bytes) or not chunk:
            return  # evicted meanwhile: the short read is caught by the size check
        yield chunk


@contextlib.contextmanager
def _fsspec(ref: RemoteRef, timeout: float) -> Iterator[Source]:
    fs = filesystem(ref.protocol, timeout)
    path = ref.url.split("://", 1)[1]
    with _store_errors(ref):
        handle = fs.open(path, "rb", block_size=CHUNK_BYTES, cache_type="none")  # one HEAD
        size = getattr(handle, "size", None)
    try:
        yield Source(int(size) if size is not None else None, _fsspec_chunks(ref, handle))
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _fsspec_chunks(ref: RemoteRef, handle: Any) -> Iterator[bytes]:
    while True:
        with _store_errors(ref):
            chunk = handle.read(CHUNK_BYTES)
        if not chunk:
            return
        yield bytes(chunk)


@contextlib.contextmanager
def _store_errors(ref: RemoteRef) -> Iterator[None]:
    """An fsspec store's exceptions, sorted: missing, fetch_failed, or Transient."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointLoadError(f"{ref.url}: no such object", reason="missing") from None
    except PermissionError as exc:
        raise CheckpointLoadError(f"{ref.url}: {exc}", reason="fetch_failed") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, OSError: a store gone away
        raise Transient(f"{ref.url}: {type(exc).__name__}: {exc}") from None
