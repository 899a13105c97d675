"""A checkpoint that travels with its notification (SPEC §9): the step before publishing.

``upload_to="s3://bucket/prefix/"`` uploads the file (``publisher/upload.py``) and the
notification names its URL and sha256; ``transport="redis"`` stores its bytes as a blob in
this Redis and the notification names ``redis-blob:<sha256>``. What cannot travel is a
reason (the notification is then ``not_sent``), never an exception; what cannot be asked
(two ways at once, a URL to upload, a prefix no store takes) is a ``ValueError`` before
anything is sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from common.identity import file_sha256
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS, RedisClient
from common.remote import BLOB_SCHEME
from common.textsafe import printable
from publisher.result import redis_unavailable
from publisher.upload import BlobTooLarge, UploadFailed, store_blob, upload_checkpoint, upload_url

__all__ = ["BlobStore", "Transport", "check_transport", "travel", "upload_target"]

log = logging.getLogger("publisher.notifier")

Transport = Literal["path", "redis"]


def check_transport(transport: str, upload_to: str | None) -> None:
    """``ValueError`` for a transport other than ``path`` or ``redis``, or for both ways."""
    if transport not in ("path", "redis"):
        raise ValueError(f"transport must be 'path' or 'redis', got {transport!r}")
    if transport == "redis" and upload_to is not None:
        raise ValueError("a checkpoint travels by upload_to or by transport='redis', not both")


def upload_target(
    path: str, remote: bool, upload_to: str | None, transport: str, default: str | None
) -> str | None:
    """Where ``path`` is uploaded: ``upload_to``, else ``default`` (``FKS_UPLOAD_TO``) for a
    local file sent by path; ``ValueError`` for a URL (``remote``) asked to travel, or a
    prefix that cannot be uploaded to."""
    target = upload_to
    if target is None and transport == "path" and not remote:
        target = default
    if (target is not None or transport == "redis") and remote:
        raise ValueError(f"{path!r} is a URL: only a local file can be uploaded or stored")
    if target is not None:
        upload_url(path, target)  # a prefix that cannot be uploaded to is a ValueError
    return target


@dataclass(frozen=True, slots=True)
class BlobStore:
    """Where ``transport="redis"`` puts a checkpoint: a client (built when first needed:
    a 64 MiB SET needs longer timeouts than a notification), the keys, the bounds."""

    client: Callable[[], RedisClient]
    keys: RedisKeys
    max_bytes: int
    keep: int


def travel(
    path: str, draft: CheckpointNotification, upload_to: str | None, blobs: BlobStore
) -> CheckpointNotification | str:
    """Upload ``path`` to ``upload_to`` (or, if None, store it as a blob); the notification
    naming where it went, or the reason it could not travel."""
    if not os.path.isfile(path):
        what = "upload" if upload_to is not None else "store in Redis"
        return f"missing_file: {path} does not exist on this machine: nothing to {what}"
    if upload_to is not None:
        sha256 = draft.sha256 or file_sha256(path)
        try:
            url = upload_checkpoint(path, upload_to, sha256)
        except UploadFailed as exc:
            return f"upload_failed: {exc}"
        log.info("uploaded %s to %s", printable(path), printable(url))
        return draft.model_copy(update={"model_path": url, "sha256": sha256})
    try:
        sha256 = store_blob(
            blobs.client(), blobs.keys, path, max_bytes=blobs.max_bytes, keep=blobs.keep
        )
    except BlobTooLarge as exc:
        return f"too_large_for_blob: {exc}"
    except REDIS_ERRORS as exc:
        return redis_unavailable(exc)
    if draft.sha256 is not None and draft.sha256 != sha256:
        return f"sha256_mismatch: {path} hashes to {sha256}, not {draft.sha256}"
    return draft.model_copy(update={"model_path": f"{BLOB_SCHEME}:{sha256}", "sha256": sha256})
