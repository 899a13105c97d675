"""Request-path freshness while the Redis listener is away: one ``os.stat`` per request.

The watched path is the tier 1 file, or the tier 2/3 directory (a new ``model_*`` checkpoint
renamed into it changes the directory's mtime). When its signature (mtime, inode, size) differs from
the last one seen, the request asks the applier to look at the disk and goes on with the
served model: no request waits for a load. The applier loads a file that is newer than the
served decision (``common/staleness.py``), and also polls the roots every
``FKS_FALLBACK_POLL_SECONDS`` while Redis is away, which catches what one ``stat`` of a
directory cannot (a file rewritten in place, a checkpoint in a tier that was empty).

File system timestamps are coarse (a few ms), so two changes inside one tick can share an
mtime. A signature younger than ``HOT_SECONDS`` is therefore not trusted: requests ask again
until it has aged (the applier coalesces the asks).

While no model is served at all, every request asks for the tier 1/2/3 resolution, whatever
the mode, and waits for that look (at most ``COLD_WAIT_SECONDS``: nothing else could be
served meanwhile); files that failed are remembered, so a bad file costs one load.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from subscriber.applier import Applier
from subscriber.holder import ModelHolder
from subscriber.snapshot import ServedModel

__all__ = ["COLD_WAIT_SECONDS", "HOT_SECONDS", "FallbackWatcher"]

HOT_SECONDS = 0.1
COLD_WAIT_SECONDS = 2.0
Signature = tuple[int, int, int]


class FallbackWatcher:
    def __init__(self, holder: ModelHolder, applier: Applier) -> None:
        self.holder = holder
        self.applier = applier
        self._seen: Signature | None = None  # trusted: aged past HOT_SECONDS
        self._observed: Signature | None = None  # the last one any request saw
        self._asked_at = 0.0

    @property
    def watch(self) -> Path | None:
        return self.applier.decider.watch

    def check(self) -> ServedModel | None:
        """The model to serve for this request; asks for a disk check if the disk changed."""
        served = self.holder.current()
        if served is None:
            ticket = self.applier.request_disk_check()
            self.applier.wait_disk_check(ticket, COLD_WAIT_SECONDS)
            return self.holder.current()
        self.holder.metrics.fallback_checks.inc()
        watch = self.watch
        signature = _signature(watch) if watch is not None else None
        if signature is not None and signature == self._seen:
            return served
        now = time.monotonic()
        if signature != self._observed or now - self._asked_at >= HOT_SECONDS:
            self._observed, self._asked_at = signature, now
            self.applier.request_disk_check()
        if signature is not None and time.time() - signature[0] / 1e9 > HOT_SECONDS:
            self._seen = signature
        return served


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
