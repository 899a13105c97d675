"""Keep the cyclic garbage collector's full passes short in a serving process.

A serving process imports torch, numpy, FastAPI and pydantic: about a million objects that
live as long as the process. CPython's full (generation 2) collection walks every one of
them: measured in a node of the fan-out benchmark, one pass took 135 ms, and it came on the
node's second swap (the young process had just created enough objects to trigger it), so
that swap, and any request in flight, waited 135 ms. :func:`freeze_startup_heap` collects
once at startup, before any model is loaded, and moves every object alive then into the
permanent generation (``gc.freeze()``): later passes walk only what was made after it
(models, requests), and the startup objects are still freed by reference counting (only a
reference cycle among them would stay, and they are the process's own modules).

``FKS_GC_FREEZE=false`` turns it off (a process embedding the routes with ``mount()`` may
prefer its own policy). The frozen count is the ``fks_gc_frozen_objects`` gauge.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["freeze_startup_heap"]

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now; the number frozen (all frozen so far)."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "froze %d startup objects out of the collector's full passes (%.0f ms)",
        frozen,
        (time.perf_counter() - start) * 1e3,
    )
    return frozen
