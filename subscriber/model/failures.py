"""Checkpoints that failed verification, remembered by the file's identity.

A file that failed for any reason (truncated, NaN, a sha256 that did not match what was
announced, too large, a hung read, …) is never loaded again by any path — notification,
catch-up, mtime fallback, cold start — until the file itself changes: another size, mtime,
inode or device is another file. The announced sha256 plays no part in the key, so a
publisher cannot force a fresh read of a known-bad file by announcing a new hash each time.
Only an explicit ``/sac/model/reload`` forgets a file (an operator's "try again").

A failure without an identity (the file could not even be stat-ed, e.g. a read that hung
before ``fstat``) is remembered by path for ``path_ttl`` seconds. ``missing`` is not a
failure of the file and is never remembered: the file may appear (shared-storage lag).

A remote checkpoint (SPEC §9) has no file before it is fetched. A checkpoint whose bytes were
fetched and verified but failed to load is remembered by its sha256 (the same bytes always
fail): :meth:`FailureMemory.remember_content`. A fetch that brought other bytes than
announced (``sha256_mismatch``) or too many (``too_large``) is remembered by URL and sha256
for ``path_ttl`` seconds, as the object behind a URL may be replaced; a store that could not
be reached (``fetch_failed``) says nothing of the checkpoint and is never remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from common.checkpoint.file import FileIdentity
from common.remote import RemoteRef

__all__ = ["NOT_REMEMBERED", "FailureMemory", "fetch_key"]

# Failures that say nothing about the file's bytes: never remembered (a blob stored again
# under its hash may be announced again at once).
NOT_REMEMBERED = frozenset({"missing", "blob_missing", "busy", "superseded", "fetch_failed"})


class FailureMemory:
    def __init__(self, size: int = 256, path_ttl: float = 60.0) -> None:
        self.size = size
        self.path_ttl = path_ttl
        self._by_identity: OrderedDict[FileIdentity, str] = OrderedDict()
        self._by_path: dict[str, tuple[float, str]] = {}
        self._by_sha256: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, identity: FileIdentity | None, path: str, reason: str) -> bool:
        """Remember a failure; False when ``reason`` is not one to remember."""
        if reason in NOT_REMEMBERED:
            return False
        with self._lock:
            if identity is not None:
                self._by_identity[identity] = reason
                self._by_identity.move_to_end(identity)
                while len(self._by_identity) > self.size:
                    self._by_identity.popitem(last=False)
            else:
                self._by_path[path] = (time.monotonic() + self.path_ttl, reason)
                if len(self._by_path) > self.size:
                    oldest = min(self._by_path, key=lambda p: self._by_path[p][0])
                    del self._by_path[oldest]
        return True

    def remember_content(self, sha256: str, reason: str) -> bool:
        """Remember that the checkpoint of these bytes failed (remote checkpoints)."""
        if reason in NOT_REMEMBERED:
            return False
        with self._lock:
            self._by_sha256[sha256] = reason
            self._by_sha256.move_to_end(sha256)
            while len(self._by_sha256) > self.size:
                self._by_sha256.popitem(last=False)
        return True

    def remember_remote(
        self,
        identity: FileIdentity | None,
        ref: RemoteRef,
        fetched_sha256: str | None,
        reason: str,
    ) -> bool:
        """A remote checkpoint failed: its verified bytes (``fetched_sha256``) for good, else
        what its store sent, by listing ``identity`` or by URL and sha256 for a while."""
        if fetched_sha256 is not None:
            return self.remember_content(fetched_sha256, reason)
        return self.remember(identity, fetch_key(ref), reason)

    def known(
        self, identity: FileIdentity | None, path: str, sha256: str | None = None
    ) -> str | None:
        """The reason ``identity`` (or ``path``, for a recent identity-less failure, or the
        bytes of ``sha256``) failed."""
        with self._lock:
            if identity is not None and identity in self._by_identity:
                return self._by_identity[identity]
            if sha256 is not None and sha256 in self._by_sha256:
                return self._by_sha256[sha256]
            entry = self._by_path.get(path)
            if entry is not None:
                if entry[0] > time.monotonic():
                    return entry[1]
                del self._by_path[path]
        return None

    def forget(self, path: str) -> None:
        """Forget every failure of ``path`` (an explicit reload retries it)."""
        with self._lock:
            for identity in [i for i in self._by_identity if i.path == path]:
                del self._by_identity[identity]
            self._by_path.pop(path, None)


def fetch_key(ref: RemoteRef) -> str:
    """What a failed fetch is remembered by: the URL and the sha256 asked of it."""
    return f"{ref.url}#{ref.sha256 or ''}"
