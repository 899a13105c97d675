"""A checkpoint that travels with its notification (SPEC §9): the step before publishing.

``upload_to="s3://bucket/prefix/"`` uploads the file (``publisher/upload.py``) and the
notification names its URL and sha256; ``transport="redis"`` stores its bytes as a blob in
this Redis and the notification names ``redis-blob:<sha256>``. What cannot travel is a
reason (the notification is then ``not_sent``), never an exception.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from common.checkpoint import file_sha256
from common.keys import RedisKeys
from common.notification import CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS, RedisClient
from common.remote import BLOB_SCHEME
from common.textsafe import printable
from publisher.upload import BlobTooLarge, UploadFailed, store_blob, upload_checkpoint

__all__ = ["BlobStore", "travel"]

log = logging.getLogger("publisher.notifier")


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
        return f"redis_unavailable: {type(exc).__name__}: {exc}"
    if draft.sha256 is not None and draft.sha256 != sha256:
        return f"sha256_mismatch: {path} hashes to {sha256}, not {draft.sha256}"
    return draft.model_copy(update={"model_path": f"{BLOB_SCHEME}:{sha256}", "sha256": sha256})
