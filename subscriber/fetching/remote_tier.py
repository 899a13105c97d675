"""The remote tier 2 (``STAT_PAIR_RL_URL``, SPEC §9): the newest ``model_*`` object under a URL.

:func:`newest_object` lists the prefix once (fsspec, the listing cache bypassed) and returns
the newest ``model_*.pt`` / ``model_*.safetensors`` object by modification time (ties: by
name, ``model_10`` above ``model_9``), with its size, its time and, where the store keeps
user metadata (S3: ``x-amz-meta-sha256``, which ``notify_checkpoint(upload_to=…)`` writes),
its sha256. The prefix is the node's own configuration, like a local directory, so an object
without a sha256 is verified by its listed size and cached under the hash of its bytes.
The applier calls it every ``FKS_REMOTE_POLL_SECONDS`` while Redis is away (never per request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.errors import CheckpointLoadError, CheckpointRejected
from common.remote import SUFFIXES, RemoteRef, canonical_url
from common.stores import filesystem

__all__ = ["RemoteObject", "newest_object"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class RemoteObject:
    ref: RemoteRef
    size: int
    mtime_ns: int


def newest_object(prefix_url: str, *, timeout: float) -> RemoteObject | None:
    """The newest checkpoint object under ``prefix_url``, or None if there is none;
    CheckpointLoadError (``fetch_failed``) when the store cannot be listed."""
    canonical = canonical_url(prefix_url)
    protocol, _, base = canonical.partition("://")
    if protocol in ("http", "https"):
        raise CheckpointRejected(
            f"{canonical}: an https:// prefix cannot be listed; use an object store URL",
            reason="unsupported_scheme",
        )
    fs = filesystem(protocol, timeout)
    base = base.rstrip("/")
    try:
        fs.invalidate_cache(base)
        entries = fs.ls(base, detail=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any store error: try again at the next poll
        raise CheckpointLoadError(
            f"{canonical}: cannot list: {type(exc).__name__}: {exc}", reason="fetch_failed"
        ) from None
    found = []
    for entry in entries:
        name = str(entry.get("name", ""))
        leaf = name.rsplit("/", 1)[-1]
        if entry.get("type") != "file" or not leaf.startswith("model_"):
            continue
        if not leaf.endswith(SUFFIXES):
            continue
        found.append(((_mtime_ns(entry), _natural(leaf)), name, int(entry.get("size") or 0)))
    if not found:
        return None
    (mtime_ns, _), name, size = max(found)
    try:
        url = canonical_url(f"{protocol}://{name.lstrip('/')}")
    except ValueError:
        return None  # a name no message could name either
    return RemoteObject(RemoteRef(url, "fsspec", protocol, _sha256_of(fs, name)), size, mtime_ns)


def _sha256_of(fs: Any, name: str) -> str | None:
    """The ``sha256`` user metadata of an object, where the store keeps such metadata."""
    metadata = getattr(fs, "metadata", None)
    if metadata is None:
        return None
    try:
        value = metadata(name).get("sha256")
    except Exception:  # noqa: BLE001 - no metadata: verified by size instead
        return None
    return value.lower() if isinstance(value, str) and _HEX64.match(value.lower()) else None


def _mtime_ns(entry: dict[str, Any]) -> int:
    for field in ("LastModified", "last_modified", "mtime", "created"):
        value = entry.get(field)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, int | float):
            return int(value * 1e9)
    return 0


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name))
