"""The trainer's side of checkpoints that travel (SPEC §9): an upload, or a Redis blob.

- :func:`upload_checkpoint`: ``PUT`` the local file under a URL prefix with fsspec
  (``s3://bucket/prefix/`` with the ``s3`` extra, or any other fsspec protocol installed),
  keeping its file name, and return the URL to announce. On S3 the object carries its
  sha256 as user metadata (``x-amz-meta-sha256``), which a node's remote tier reads. Object
  stores make a PUT visible whole or not at all.
- :func:`store_blob`: ``SET fks:{instance}:blob:<sha256>`` to the file's bytes in one Lua
  call that also keeps only the newest ``FKS_BLOB_KEEP`` blobs (never the one ``:latest``
  names), and return the sha256 of the bytes stored (announced as ``redis-blob:<sha256>``).
  A file over ``FKS_BLOB_MAX_BYTES`` is refused.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from common.keys import RedisKeys
from common.redis_io.connect import RedisClient
from common.redis_io.scripts import STORE_BLOB
from common.remote import BLOB_SCHEME, canonical_url, is_url
from common.stores import filesystem

__all__ = ["BlobTooLarge", "UploadFailed", "store_blob", "upload_checkpoint"]


class UploadFailed(Exception):
    """The object store did not take the file (unreachable, refused, no such bucket)."""


class BlobTooLarge(ValueError):
    """A file over ``FKS_BLOB_MAX_BYTES``: announce it through object storage instead."""


def upload_url(local: str | os.PathLike[str], prefix: str) -> str:
    """The URL ``local`` gets under ``prefix`` (a directory): ``prefix/<file name>``."""
    if not is_url(prefix) or prefix.lower().startswith(("file:", BLOB_SCHEME + ":")):
        raise ValueError(f"upload_to must be a URL such as s3://bucket/prefix/, got {prefix!r}")
    base = canonical_url(prefix)
    if base.startswith(("http://", "https://")):
        raise ValueError("upload_to takes an object store URL (s3://…, gs://…), not http(s)")
    return base.rstrip("/") + "/" + Path(local).name


def upload_checkpoint(local: str | os.PathLike[str], prefix: str, sha256: str) -> str:
    """Upload ``local`` under ``prefix`` and return its URL; UploadFailed if the store
    did not take it (ValueError for a prefix that is not an object store URL)."""
    url = upload_url(local, prefix)
    protocol, _, path = url.partition("://")
    try:
        fs = filesystem(protocol)
        extra = {"Metadata": {"sha256": sha256}} if protocol in ("s3", "s3a") else {}
        fs.put_file(os.fspath(local), path, **extra)
    except ImportError as exc:
        hint = " pip install 'fks-checkpoint-notify[s3]'" if protocol in ("s3", "s3a") else ""
        raise UploadFailed(f"no client for {protocol}:// installed ({exc});{hint}") from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, OSError: the store said no
        raise UploadFailed(f"{url}: {type(exc).__name__}: {exc}") from None
    return url


def store_blob(
    client: RedisClient,
    keys: RedisKeys,
    local: str | os.PathLike[str],
    *,
    max_bytes: int,
    keep: int,
) -> str:
    """Store ``local``'s bytes as a blob and return their sha256 (the blob is
    ``redis-blob:<sha256>``). BlobTooLarge over ``max_bytes``; redis errors propagate."""
    size = os.path.getsize(local)
    if size > max_bytes:
        raise BlobTooLarge(
            f"{os.fspath(local)} is {size} bytes, over FKS_BLOB_MAX_BYTES ({max_bytes}): "
            "announce it through object storage (upload_to=…)"
        )
    data = Path(local).read_bytes()
    if len(data) > max_bytes:  # grew since the stat
        raise BlobTooLarge(f"{os.fspath(local)} is over FKS_BLOB_MAX_BYTES ({max_bytes})")
    sha256 = hashlib.sha256(data).hexdigest()
    client.eval(
        STORE_BLOB,
        3,
        keys.blob(sha256),
        keys.blobs,
        keys.latest,
        data,
        sha256,
        str(keep),
        keys.blob_prefix,
        str(int(time.time() * 1000)),
    )
    return sha256
