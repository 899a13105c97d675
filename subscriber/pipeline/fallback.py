"""Request-path freshness while the Redis listener is away: one ``os.stat`` per request.

The watched path is the tier 1 file, or the tier 2/3 directory (a new ``model_*`` checkpoint
renamed into it changes the directory's mtime). While its signature (mtime, inode, size) is
the last one confirmed, a request costs that one ``stat`` and nothing else. When it differs,
the request asks the applier to look at the disk and waits for that look, at most
``FRESH_WAIT_SECONDS``, so the next request after a newer file is written is answered by it
(the applier loads a file that is newer than the served decision, ``common/staleness.py``).
A look that takes longer (a slow or hung load: it keeps its own budget on the load lane) lets
the request go on with the served model; the signature then counts as confirmed, so the
requests after it do not wait again, and the model is swapped in when the load ends. A file
that failed is remembered by its identity (``subscriber/model/failures.py``): a bad new file costs
one load, never a wait per request. In Redis mode none of this runs: the listener decides.

The applier also polls the roots every ``FKS_FALLBACK_POLL_SECONDS`` while Redis is away,
which catches what one ``stat`` of a directory cannot (a file rewritten in place, a
checkpoint in a tier that was empty).

File system timestamps are coarse (a few ms), so two changes inside one tick can share an
mtime. A signature younger than ``HOT_SECONDS`` is therefore not confirmed: each request
asks again, and waits, until it has aged (the applier coalesces the asks).

While no model is served at all, every request asks for the tier 1/2/3 resolution, whatever
the mode, and waits for that look (at most ``COLD_WAIT_SECONDS``: nothing else could be
served meanwhile); files that failed are remembered, so a bad file costs one load.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from subscriber.model.holder import ModelHolder
from subscriber.model.snapshot import ServedModel
from subscriber.pipeline.applier import Applier

__all__ = ["COLD_WAIT_SECONDS", "FRESH_WAIT_SECONDS", "HOT_SECONDS", "FallbackWatcher"]

HOT_SECONDS = 0.1
COLD_WAIT_SECONDS = 2.0
FRESH_WAIT_SECONDS = 2.0
Signature = tuple[int, int, int]


class FallbackWatcher:
    def __init__(self, holder: ModelHolder, applier: Applier) -> None:
        self.holder = holder
        self.applier = applier
        self._seen: Signature | None = None  # confirmed: aged past HOT_SECONDS and looked at
        self._asked_at = 0.0  # the last ask while the watched path could not be stat-ed

    @property
    def watch(self) -> Path | None:
        return self.applier.decider.watch

    def check(self) -> ServedModel | None:
        """The model to serve for this request: after the applier's look at the disk if the
        disk changed (waiting at most ``FRESH_WAIT_SECONDS``)."""
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
        if watch is not None and signature is None:
            # The watched tier is gone: nothing newer can be read there. The applier looks
            # at the other tiers (asked here at most every HOT_SECONDS, and on its poll).
            now = time.monotonic()
            if now - self._asked_at >= HOT_SECONDS:
                self._asked_at = now
                self.applier.request_disk_check()
            return served
        # Changed, or not known yet (Redis just went away): the look covers this request.
        # The signature's age is taken now, at the stat: a look that starts later covers
        # every change that could still share its mtime tick.
        aged = signature is not None and abs(time.time() - signature[0] / 1e9) > HOT_SECONDS
        ticket = self.applier.request_disk_check()
        self.applier.wait_disk_check(ticket, FRESH_WAIT_SECONDS)
        if aged:
            self._seen = signature
        return self.holder.current()


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
