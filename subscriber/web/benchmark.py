"""``POST /sac/benchmark``: time the served policy in-process, bounded every way.

- Caps on the request (400): ``batch_size <= FKS_MAX_BATCH_ROWS``, ``warmup`` and
  ``iterations`` up to 10,000, and ``batch_size * (warmup + iterations)`` up to 2 M rows;
  and, once the served model is known, ``batch_size`` rows within
  ``FKS_MAX_ACTIVATION_BYTES`` (``subscriber/model/budget.py``).
- One at a time per app (each uvicorn worker): a second call while one runs is 429 at once,
  never queued.
- A wall-clock cap of ``MAX_SECONDS``: the timing stops there and the answer reports what
  was measured (``iterations`` is then the number timed and ``capped`` is true); at least
  one iteration is always timed.
- It stops when its client goes away: the handler polls ``request.is_disconnected()`` while
  the timing runs in a thread on the model-work limiter (:mod:`subscriber.web.modelwork`),
  and the thread checks a cancel event between iterations.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status

from subscriber.model.budget import over_activation_budget
from subscriber.web.deps import (
    BODY_LIMITS,
    NO_MODEL,
    UNAUTHORIZED,
    bad,
    error,
    get_authorized_node,
    served_model,
)
from subscriber.web.modelwork import run_model_work
from subscriber.web.schemas import BenchmarkRequest, BenchmarkResponse

if TYPE_CHECKING:
    from subscriber.model.snapshot import ServedModel

__all__ = [
    "MAX_BENCHMARK_ROWS", "MAX_ITERATIONS", "MAX_SECONDS", "MAX_WARMUP", "benchmark_router",
]  # fmt: skip

log = logging.getLogger(__name__)

MAX_WARMUP = 10_000
MAX_ITERATIONS = 10_000
MAX_BENCHMARK_ROWS = 2_000_000
MAX_SECONDS = 5.0
DISCONNECT_POLL_SECONDS = 0.1

benchmark_router = APIRouter(prefix="/sac", tags=["sac"])


@dataclass
class Timing:
    """One run: the samples so far, and why it stopped early, if it did."""

    samples: list[float] = field(default_factory=list)
    capped: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


@benchmark_router.post(
    "/benchmark",
    response_model=BenchmarkResponse,
    responses={
        **NO_MODEL,
        **UNAUTHORIZED,
        **BODY_LIMITS,
        400: error("Over the caps"),
        429: error("A benchmark is running already"),
    },
    summary="Time the served policy in-process (one at a time, at most 5 s)",
)
async def benchmark(body: BenchmarkRequest, request: Request) -> BenchmarkResponse | Response:
    node = await get_authorized_node(request)  # see subscriber.web.predict.predict()
    state = request.app.state
    if getattr(state, "fks_benchmark_running", False):  # before the caps: any call is 429
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="a benchmark is running already; one runs at a time, retry when it ends",
        )
    limit = node.settings.max_batch_rows
    if (
        body.batch_size > limit
        or body.warmup > MAX_WARMUP
        or body.iterations > MAX_ITERATIONS
        or body.batch_size * (body.warmup + body.iterations) > MAX_BENCHMARK_ROWS
    ):
        raise bad(
            f"over the caps: batch_size <= {limit}, warmup <= {MAX_WARMUP}, "
            f"iterations <= {MAX_ITERATIONS}, batch_size*(warmup+iterations) <= "
            f"{MAX_BENCHMARK_ROWS}"
        )
    state.fks_benchmark_running = True  # no await since the check: one event loop
    try:
        model = await served_model(node)
        if (why := over_activation_budget(body.batch_size, model, node.settings)) is not None:
            raise bad(f"over the caps: {why}")
        timing = Timing()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_disconnect, request, timing.cancel)
            await run_model_work(request.app, lambda: _time_runner(model, body, timing))
            tasks.cancel_scope.cancel()
    finally:
        state.fks_benchmark_running = False
    if timing.cancel.is_set():
        log.info("benchmark stopped after %d iterations: its client went away", len(timing.samples))
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    ordered = sorted(timing.samples)
    return BenchmarkResponse(
        batch_size=body.batch_size,
        iterations=len(ordered),
        p50_ms=_pct(ordered, 50),
        p90_ms=_pct(ordered, 90),
        p99_ms=_pct(ordered, 99),
        mean_ms=math.fsum(ordered) / len(ordered),
        jit_compiled=model.jit_compiled,
        capped=timing.capped,
    )


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_SECONDS)
    cancel.set()


def _time_runner(model: ServedModel, body: BenchmarkRequest, timing: Timing) -> None:
    deadline = time.monotonic() + MAX_SECONDS
    rng = np.random.default_rng(0)
    shape = (body.batch_size, *model.io.input_shape)
    states = rng.standard_normal(shape, dtype=np.float32)
    for _ in range(body.warmup):
        if timing.cancel.is_set() or time.monotonic() > deadline:
            break
        model.runner(states)
    for _ in range(body.iterations):
        if timing.cancel.is_set() or (timing.samples and time.monotonic() > deadline):
            timing.capped = not timing.cancel.is_set()
            return
        start = time.perf_counter()
        model.runner(states)
        timing.samples.append((time.perf_counter() - start) * 1e3)


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
