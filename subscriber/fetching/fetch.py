"""The fetch seam: a remote checkpoint (:class:`~common.remote.RemoteRef`) → a verified local
file in a content-addressed cache (SPEC §9). Plain values in, plain values out.

- **Cache.** ``FKS_CACHE_DIR/<sha256><suffix>``. A checkpoint already there (its bytes
  re-hashed) is not downloaded again; after a download the newest ``FKS_CACHE_KEEP`` files
  are kept (by last use; the ones in ``protect``, the served file, never go).
- **Nothing partial.** A download is written to a temporary name in the cache directory
  (``.<random>.part``), hashed while it streams, and renamed to its final name only once
  its sha256 matches (and its size, when the store declared one); on any failure the
  temporary file is removed. Temporary files a killed process left are swept after an hour.
- **Bounded.** A declared size over ``max_bytes`` is refused before the first byte
  (``too_large``), and a stream is cut as soon as it passes ``max_bytes``. The whole fetch,
  retries included, has ``timeout`` seconds (``FKS_FETCH_TIMEOUT_SECONDS``) of wall clock,
  however the bytes arrive: a :class:`~subscriber.fetching.deadline.Deadline` whose watchdog
  cuts the transport's socket, connection or call when the time is up (a store that trickles a byte
  at a time is not given up on by any per-read timeout), then ``fetch_failed``.
- **Retries.** A store that cannot be reached or breaks off is tried again ``retries`` times
  with jittered backoff (0.2 s, doubling, at most 2 s) within the time budget; then
  ``fetch_failed``. ``missing`` (no such object), ``blob_missing``, ``too_large``,
  ``sha256_mismatch`` and a store's refusal are not retried here.

Runs on the load lane (``subscriber/model/holder.py``): never on the request path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from common.errors import CheckpointLoadError
from common.remote import SUFFIXES, RemoteRef
from common.settings import Settings
from common.textsafe import printable
from subscriber.fetching.deadline import Deadline
from subscriber.fetching.transports import Transient, open_source

__all__ = ["FetchOptions", "Fetched", "cached_file", "fetch"]

log = logging.getLogger(__name__)

STALE_PART_SECONDS = 3600.0
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 2.0


@dataclass(frozen=True, slots=True)
class FetchOptions:
    cache_dir: Path
    keep: int = 4
    max_bytes: int = 1 << 30
    timeout: float = 30.0
    retries: int = 3
    redis_url: str = "redis://localhost:6379/0"
    instance_id: str = "default"

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchOptions:
        return cls(
            cache_dir=settings.cache_dir.expanduser().absolute(),
            keep=settings.cache_keep,
            max_bytes=settings.max_checkpoint_bytes,
            timeout=settings.fetch_timeout_seconds,
            retries=settings.fetch_retries,
            redis_url=settings.redis_url,
            instance_id=settings.instance_id,
        )


@dataclass(frozen=True, slots=True)
class Fetched:
    """A verified local copy: where, its sha256 and size, and what it cost."""

    path: Path
    sha256: str
    size: int
    cached: bool  # found in the cache: nothing downloaded
    seconds: float
    attempts: int


def fetch(
    ref: RemoteRef,
    options: FetchOptions,
    *,
    expected_size: int | None = None,
    on_bytes: Callable[[int], None] = lambda _: None,
    protect: Collection[Path] = (),
    deadline: Deadline | None = None,
) -> Fetched:
    """A verified local file holding ``ref``'s checkpoint; CheckpointLoadError otherwise.

    ``expected_size``: the size a listing gave (checked beside the sha256, or instead of it
    for an object of the node's own remote tier, whose ``ref.sha256`` may be None).
    ``on_bytes(n)``: called for every chunk received, failed attempts included.
    ``deadline``: the fetch's wall clock (default: ``options.timeout``), started here; the
    caller keeps it to cut the fetch sooner (the load lane, when it abandons the load).
    """
    try:
        return _fetch(ref, options, expected_size, on_bytes, protect, deadline)
    except OSError as exc:  # the cache itself: not writable, full
        raise CheckpointLoadError(
            f"{ref.url}: cannot write to the cache {options.cache_dir}: {exc}",
            reason="fetch_failed",
        ) from None


def _fetch(
    ref: RemoteRef,
    options: FetchOptions,
    expected_size: int | None,
    on_bytes: Callable[[int], None],
    protect: Collection[Path],
    deadline: Deadline | None,
) -> Fetched:
    start = time.monotonic()
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    if ref.sha256 is not None and (hit := cached_file(options.cache_dir, ref.sha256)):
        _touch(hit)
        return Fetched(hit, ref.sha256, hit.stat().st_size, True, time.monotonic() - start, 0)
    delay = BACKOFF_INITIAL
    attempt = 0
    with deadline or Deadline(options.timeout) as clock:
        while True:
            attempt += 1
            try:
                path, digest, size = _download(ref, options, clock, expected_size, on_bytes)
                break
            except Transient as exc:
                if clock.expired:
                    raise _out_of_time(ref, options, start, attempt, str(exc)) from None
                pause = random.uniform(delay / 2, delay)
                if attempt > options.retries or clock.left() <= pause:
                    raise CheckpointLoadError(
                        f"{ref.url}: not fetched after {attempt} attempt(s) in "
                        f"{time.monotonic() - start:.1f} s: {exc}",
                        reason="fetch_failed",
                    ) from None
                log.info(
                    "fetching %s failed (%s); retrying in %.2f s", printable(ref.url), exc, pause
                )
                clock.sleep(pause)
                delay = min(delay * 2, BACKOFF_MAX)
    _prune(options.cache_dir, options.keep, {path, *protect})
    seconds = time.monotonic() - start
    log.info(
        "fetched %s (%d bytes) in %.3f s, %d attempt(s)", printable(ref.url), size, seconds, attempt
    )
    return Fetched(path, digest, size, False, seconds, attempt)


def cached_file(cache_dir: Path, sha256: str) -> Path | None:
    """The cache's file of ``sha256`` if it is there and still hashes to it (a file that does
    not is removed)."""
    for suffix in (*SUFFIXES, ""):
        path = cache_dir / f"{sha256}{suffix}"
        try:
            if not path.is_file() or path.is_symlink():
                continue
            if _sha256_of(path) == sha256:
                return path
            log.warning("cached %s no longer hashes to its name; removed", path)
            path.unlink()
        except OSError:
            continue
    return None


def _out_of_time(
    ref: RemoteRef, options: FetchOptions, start: float, attempts: int, last: str
) -> CheckpointLoadError:
    return CheckpointLoadError(
        f"{ref.url}: not fetched within {options.timeout:.1f} s (FKS_FETCH_TIMEOUT_SECONDS): "
        f"cut after {time.monotonic() - start:.1f} s, {attempts} attempt(s); last: {last}",
        reason="fetch_failed",
    )


def _download(
    ref: RemoteRef,
    options: FetchOptions,
    deadline: Deadline,
    expected_size: int | None,
    on_bytes: Callable[[int], None],
) -> tuple[Path, str, int]:
    cache_dir = options.cache_dir
    part = cache_dir / f".{secrets.token_hex(8)}.part"
    hasher = hashlib.sha256()
    total = 0
    head = b""
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            if deadline.expired:
                raise Transient("no time left for another attempt")
            with open_source(
                ref,
                deadline=deadline,
                timeout=options.timeout,
                redis_url=options.redis_url,
                instance_id=options.instance_id,
            ) as source:
                declared = source.size if source.size is not None else expected_size
                if declared is not None and declared > options.max_bytes:
                    raise _too_large(ref, declared, options.max_bytes, "declared")
                for chunk in source.chunks:
                    total += len(chunk)
                    on_bytes(len(chunk))
                    if total > options.max_bytes:
                        raise _too_large(ref, total, options.max_bytes, "cut at")
                    if deadline.expired:
                        raise Transient(f"{total} bytes received")
                    if len(head) < 16:
                        head += chunk[:16]
                    hasher.update(chunk)
                    _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        for size in (source.size, expected_size):
            if size is not None and total != size:
                raise Transient(f"{ref.url}: {total} bytes received, {size} expected (cut short)")
        digest = hasher.hexdigest()
        if ref.sha256 is not None and digest != ref.sha256:
            raise CheckpointLoadError(
                f"{ref.url}: the {total} bytes fetched hash to {digest}, announced {ref.sha256}",
                reason="sha256_mismatch",
            )
        final = cache_dir / f"{digest}{ref.suffix or _sniff(head)}"
        os.replace(part, final)
        _fsync_dir(cache_dir)
        return final, digest, total
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise


def _too_large(ref: RemoteRef, size: int, limit: int, how: str) -> CheckpointLoadError:
    return CheckpointLoadError(
        f"{ref.url}: {how} {size} bytes, over the {limit} a checkpoint may have "
        "(FKS_MAX_CHECKPOINT_BYTES)",
        reason="too_large",
    )


def _sniff(head: bytes) -> str:
    """``.pt`` for a torch.save zip archive, ``.safetensors`` for a safetensors header."""
    if head.startswith(b"PK"):
        return ".pt"
    if len(head) > 8 and head[8:9] == b"{":
        return ".safetensors"
    return ".pt"  # the loader says what it is not


def _prune(cache_dir: Path, keep: int, protect: Collection[Path]) -> None:
    """Keep the ``keep`` most recently used checkpoints (and ``protect``); sweep old temps."""
    files: list[tuple[float, Path]] = []
    now = time.time()
    for entry in os.scandir(cache_dir):
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if entry.name.endswith(".part"):
                if now - mtime > STALE_PART_SECONDS:
                    os.unlink(entry.path)
                continue
            files.append((mtime, Path(entry.path)))
        except OSError:
            continue
    files.sort(reverse=True)
    kept = {p.resolve() for p in protect}
    for _, path in files[keep:]:
        if path.resolve() not in kept:
            with contextlib.suppress(OSError):
                path.unlink()


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
