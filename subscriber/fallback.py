"""Request-path freshness while the Redis listener is away: one ``os.stat`` per request.

The watched path is the tier 1 file, or the tier 2/3 directory (a new ``model_*.pt`` renamed
into it, or one replaced in place, changes the directory's mtime). When its signature
(mtime, inode, size) differs from the last one seen, the tiers are resolved again and a file
*newer* than the served one is loaded on that request: the classic behaviour, where the next
request sees a newer file. Requests that arrive while another one loads keep the served model.

File system timestamps are coarse (a few ms), so two changes inside one tick can share an
mtime. A signature younger than ``HOT_SECONDS`` is therefore not trusted: requests look again
until it has aged, which costs a directory scan only just after a change.

While no model is served at all, every request resolves the tiers, whatever the mode, and
tries the candidates newest first until one loads (files that failed are remembered, so a bad
file costs one load, not one per request).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from subscriber.holder import ModelHolder
from subscriber.snapshot import ServedModel

__all__ = ["HOT_SECONDS", "FallbackWatcher"]

HOT_SECONDS = 0.1
Signature = tuple[int, int, int]


class FallbackWatcher:
    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder
        self._seen: Signature | None = None
        self._watch: Path | None = None

    def check(self) -> ServedModel | None:
        """The model to serve for this request, reloading first if the disk has a newer one."""
        served = self.holder.current()
        if served is None:
            return self._first_load()
        self.holder.metrics.fallback_checks.inc()
        signature = _signature(self._watch) if self._watch is not None else None
        if signature is not None and signature == self._seen:
            return served
        if self._load_if_newer(served) and signature is not None:
            if time.time() - signature[0] / 1e9 > HOT_SECONDS:
                self._seen = signature
        return self.holder.current()

    def _first_load(self) -> ServedModel | None:
        """Cold start: the newest checkpoint that loads (a bad newest file must not leave the
        server without any model while an older good one lies beside it)."""
        self._watch = self.holder.roots.resolve().watch
        for candidate in self.holder.roots.candidates():
            self.holder.load_file(candidate, source="disk", blocking=True)
            if self.holder.current() is not None:
                break
        return self.holder.current()

    def _load_if_newer(self, served: ServedModel) -> bool:
        """True when this request finished looking (False: another request holds the lock)."""
        resolved = self.holder.roots.resolve()
        self._watch = resolved.watch
        if resolved.path is None:
            return True
        try:
            stat = os.stat(resolved.path)
        except OSError:
            return True
        real = os.path.realpath(resolved.path)
        same_file = real == str(served.path)
        # Another file that the resolution ranks first counts as newer even with an equal
        # mtime: timestamps tick coarsely, so two saves a millisecond apart can share one.
        newer = (
            stat.st_mtime_ns != served.mtime_ns
            if same_file
            else stat.st_mtime_ns >= served.mtime_ns
        )
        if not newer:
            return True
        return self.holder.load_file(Path(real), source="mtime", blocking=False) is not None


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
