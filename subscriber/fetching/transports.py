"""The clients behind the fetch seam: one byte stream per kind of :class:`RemoteRef`.

:func:`open_source` yields a :class:`Source`: the size the store declares (``Content-Length``,
the object's size, ``STRLEN``), when it does, and an iterator of chunks. What goes wrong is
sorted here, once:

- the object is not there (404, no such key or bucket): ``missing`` — not a failure of the
  checkpoint; the notification is retried a while, as a local file that is late;
- a ``redis-blob:`` that is not in Redis: ``blob_missing``, refused at once. A blob is named
  by its content and stored before it is announced: one that is gone (evicted, or past
  ``FKS_BLOB_KEEP``) will not come back by waiting;
- the store could not be reached or broke off (connection refused or reset, a timeout, a 5xx,
  a body cut short): :class:`Transient`, retried by ``subscriber/fetching/fetch.py`` with backoff;
- anything else the store answers (403, a redirect, another 4xx): ``fetch_failed``.

Every read is bounded by the fetch's :class:`~subscriber.fetching.deadline.Deadline`, a wall
clock, not a timeout per read: while a source is open, the deadline's watchdog knows how to cut it.
``https`` (and ``http`` to loopback) uses httpx, never following redirects (a redirect could
leave the allowed prefixes); its sockets are caught as they open (httpx's ``trace`` request
extension) and shut down when the time is up. fsspec protocols use
``fsspec.filesystem(protocol)`` with the standard credentials and endpoint of the environment
(``AWS_ENDPOINT_URL``, …); an async one (s3fs, gcsfs, …) runs each call on fsspec's event
loop as a future that the deadline cancels; another is closed (all it offers). Blobs are read
from the instance's Redis with ``GETRANGE`` in chunks, measured with ``STRLEN`` first; the
deadline disconnects the client, in-use connections included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from common.errors import CheckpointLoadError
from common.redis_io.connect import REDIS_ERRORS, LazyRedis, RedisClient, Timeouts
from common.remote import RemoteRef
from common.settings import keys_for
from common.stores import STALL_SECONDS, filesystem
from subscriber.fetching.deadline import Deadline

__all__ = ["CHUNK_BYTES", "Source", "Transient", "open_source"]

CHUNK_BYTES = 1 << 20
HTTP_CHUNK_BYTES = 64 << 10
_RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# httpcore's trace events for a connection that opened (its network stream as return_value)
_OPENED = ("connect_tcp.complete", "connect_unix_socket.complete", "start_tls.complete")


class Transient(Exception):
    """The store could not be reached or broke off: worth another try."""


@dataclass
class Source:
    size: int | None
    chunks: Iterator[bytes]


@contextlib.contextmanager
def open_source(
    ref: RemoteRef,
    *,
    deadline: Deadline,
    timeout: float,
    redis_url: str = "",
    instance_id: str = "default",
) -> Iterator[Source]:
    """The bytes of ``ref`` as chunks, cut at ``deadline``; raises CheckpointLoadError or
    :class:`Transient`. ``timeout``: the fetch's whole budget (clients are configured by it)."""
    if ref.kind == "http":
        with _http(ref, deadline) as source:
            yield source
    elif ref.kind == "blob":
        with _blob(ref, deadline, redis_url, instance_id) as source:
            yield source
    else:
        with _fsspec(ref, deadline, timeout) as source:
            yield source


@contextlib.contextmanager
def _http(ref: RemoteRef, deadline: Deadline) -> Iterator[Source]:
    sockets: list[socket.socket] = []

    def opened(event: str, info: dict[str, Any]) -> None:
        if event.endswith(_OPENED):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                sockets.append(sock)
                if deadline.expired:  # opened as the watchdog ran: cut it too
                    _shut(sock)

    def cut() -> None:
        for sock in sockets:
            _shut(sock)

    left = deadline.left()
    try:
        with (
            deadline.guard(cut),
            httpx.Client(
                timeout=httpx.Timeout(min(left, STALL_SECONDS), pool=left),
                follow_redirects=False,
            ) as client,
            client.stream("GET", ref.url, extensions={"trace": opened}) as response,
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


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down: a read blocked on it in another thread returns (a close would not
    wake it). The plain socket's call, also for a TLS socket: no TLS state is touched."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _http_chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_raw(HTTP_CHUNK_BYTES)  # the bytes as sent: no decoding


@contextlib.contextmanager
def _blob(ref: RemoteRef, deadline: Deadline, redis_url: str, instance_id: str) -> Iterator[Source]:
    assert ref.sha256 is not None
    key = keys_for(instance_id, redis_url).blob(ref.sha256)
    bound = max(0.001, min(deadline.left(), STALL_SECONDS))
    lazy = LazyRedis(redis_url, Timeouts(bound, bound))
    try:
        with deadline.guard(lazy.close):  # disconnects in-use connections too
            try:
                client = lazy.get()
                size = int(client.strlen(key))
            except REDIS_ERRORS as exc:
                raise Transient(f"{ref.url}: Redis: {type(exc).__name__}: {exc}") from None
            if size == 0:
                raise CheckpointLoadError(
                    f"{ref.url}: no blob {key} in Redis (evicted, or past FKS_BLOB_KEEP): "
                    "it will not appear; store it again and announce it anew",
                    reason="blob_missing",
                )
            yield Source(size, _blob_chunks(ref, client, key, size, deadline))
    finally:
        lazy.close()


def _blob_chunks(
    ref: RemoteRef, client: RedisClient, key: str, size: int, deadline: Deadline
) -> Iterator[bytes]:
    for start in range(0, size, CHUNK_BYTES):
        if deadline.expired:  # cut: the client would connect again, unguarded
            raise Transient(f"{ref.url}: cut after {start} bytes")
        try:
            chunk = client.getrange(key, start, min(start + CHUNK_BYTES, size) - 1)
        except REDIS_ERRORS as exc:
            raise Transient(f"{ref.url}: Redis: {type(exc).__name__}: {exc}") from None
        if not isinstance(chunk, bytes) or not chunk:
            return  # evicted meanwhile: the short read is caught by the size check
        yield chunk


@contextlib.contextmanager
def _fsspec(ref: RemoteRef, deadline: Deadline, timeout: float) -> Iterator[Source]:
    fs = filesystem(ref.protocol, timeout)
    path = ref.url.split("://", 1)[1]
    if getattr(fs, "async_impl", False):
        with _store_errors(ref):
            info = _on_loop(fs, deadline, fs._info(path))
        if info.get("type", "file") != "file":
            raise CheckpointLoadError(f"{ref.url}: not an object", reason="missing")
        size = info.get("size")
        yield Source(
            int(size) if size is not None else None,
            _async_chunks(ref, fs, path, int(size) if size is not None else None, deadline),
        )
        return
    with _store_errors(ref):
        handle = fs.open(path, "rb", block_size=CHUNK_BYTES, cache_type="none")
        size = getattr(handle, "size", None)
    try:
        with deadline.guard(handle.close):
            yield Source(int(size) if size is not None else None, _fsspec_chunks(ref, handle))
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _on_loop(fs: Any, deadline: Deadline, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on ``fs``'s event loop until it ends or the deadline cancels it."""
    future = asyncio.run_coroutine_threadsafe(coro, fs.loop)

    def cancel() -> None:  # the task is cancelled on the loop: its connection is closed
        future.cancel()

    with deadline.guard(cancel):
        try:
            return future.result(timeout=deadline.left())
        finally:
            cancel()  # over its time; a no-op once it ended


def _async_chunks(
    ref: RemoteRef, fs: Any, path: str, size: int | None, deadline: Deadline
) -> Iterator[bytes]:
    start = 0
    while size is None or start < size:
        end = start + CHUNK_BYTES if size is None else min(start + CHUNK_BYTES, size)
        with _store_errors(ref):
            chunk = _on_loop(fs, deadline, fs._cat_file(path, start=start, end=end))
        if not chunk:
            return
        yield bytes(chunk)
        start += len(chunk)


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
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, OSError, a cut: a store gone
        raise Transient(f"{ref.url}: {type(exc).__name__}: {exc}") from None
