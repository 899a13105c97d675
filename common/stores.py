"""fsspec file systems for the URLs of SPEC §9, shared by the publisher and the nodes.

One instance per protocol, endpoint and timeout. ``AWS_ENDPOINT_URL`` is passed to ``s3fs``
explicitly (botocore reads it too): fsspec caches instances by their arguments, and a
process whose environment names another endpoint must not get the old instance.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["STALL_SECONDS", "filesystem"]

# A store silent this long (no connection, no byte) is given up on for this attempt: within
# a fetch's budget (30 s by default) there is time to try again.
STALL_SECONDS = 10.0

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, float | None], Any] = {}


def filesystem(protocol: str, timeout: float | None = None) -> Any:
    """The fsspec file system of ``protocol`` (ImportError if its package is missing).

    For S3 with ``timeout``: botocore's connect/read timeouts (at most ``STALL_SECONDS``:
    a stalled read is given up on and retried), and a single attempt per call (the caller
    retries within its own budget).
    """
    import fsspec

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    key = (protocol, endpoint, timeout)
    with _LOCK:
        if key not in _CACHE:
            options: dict[str, Any] = {}
            if protocol in ("s3", "s3a"):
                if endpoint:
                    options["client_kwargs"] = {"endpoint_url": endpoint}
                if timeout is not None:
                    options["config_kwargs"] = {
                        "connect_timeout": min(timeout, STALL_SECONDS),
                        "read_timeout": min(timeout, STALL_SECONDS),
                        "retries": {"max_attempts": 1},
                    }
            fs = fsspec.filesystem(protocol, **options)
            if protocol in ("s3", "s3a") and timeout is not None:
                fs.retries = 1  # s3fs' own retry loop (5 by default): the caller retries
            _CACHE[key] = fs
        return _CACHE[key]
