"""Where a forward pass runs: inline on the event loop when it is short, else in a thread on
a limiter of its own.

A thread hop costs ~60 µs, more than a small pass: the 28→256→256 actor (73,730
parameters) answers one row in ~15 µs (numpy runner) to ~90 µs (eager) and 64 rows in
~0.2-0.4 ms, so those stay inline (the hot path). The time grows with rows × parameters
(measured on the 2-core machine: 17.8 M → ~0.6 ms, 69 M → 1-1.7 ms, 273 M → ~7 ms), so a pass
runs inline only when ``rows <= INLINE_ROWS`` and ``rows * parameters <= INLINE_BUDGET``,
which keeps an inline pass under about 1 ms; anything bigger would stall every request.

Off-loop model work (big batches, big models, the benchmark) runs on
:func:`model_limiter`, ``MODEL_WORK_TOKENS`` threads per app, never on the default
threadpool: however much of it queues, the threadpool stays free for what needs it
(reload, rollback, the fallback's stat-and-maybe-load).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import FastAPI

__all__ = [
    "INLINE_BUDGET",
    "INLINE_ROWS",
    "MODEL_WORK_TOKENS",
    "model_limiter",
    "run_model_work",
    "runs_inline",
]

INLINE_ROWS = 64
INLINE_BUDGET = 5_000_000  # rows x parameters: 64 rows of the default actor fit
MODEL_WORK_TOKENS = 2

T = TypeVar("T")


def runs_inline(rows: int, parameters: int) -> bool:
    """Whether a forward pass of ``rows`` through ``parameters`` weights may block the loop."""
    return rows <= INLINE_ROWS and rows * parameters <= INLINE_BUDGET


def model_limiter(app: FastAPI) -> CapacityLimiter:
    """The app's limiter for model work, made on first use (inside the event loop)."""
    limiter: CapacityLimiter | None = getattr(app.state, "fks_model_limiter", None)
    if limiter is None:
        limiter = app.state.fks_model_limiter = CapacityLimiter(MODEL_WORK_TOKENS)
    return limiter


async def run_model_work(app: FastAPI, work: Callable[[], T]) -> T:
    """``work()`` in a worker thread, on the app's model limiter."""
    return await anyio.to_thread.run_sync(work, limiter=model_limiter(app))
