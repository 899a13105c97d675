"""The ``/sac`` routes (SPEC §5) and ``/metrics``. They only read the node (``app.state``).

Each request captures the served model once (:func:`served_model`) and uses that snapshot to
the end, so a swap mid-request never mixes two models. Handlers are ``async``: in Redis mode
the snapshot read and a small forward pass (tens of µs) run inline, which is cheaper than a
thread hop; anything that may block — the fallback's stat-and-maybe-load, batches over
``INLINE_ROWS`` rows, the benchmark, reload and rollback — runs in the threadpool, so the
event loop keeps serving other requests (measured in bench/handlers.py).

Nothing here imports torch at module level: with a broken torch the app still starts and
answers 503.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from common.errors import CheckpointError
from subscriber.auth import ApiKey, require_api_key
from subscriber.errors import NoPreviousModel, NothingToLoad
from subscriber.schemas import (
    BatchRequest,
    BatchResponse,
    BenchmarkRequest,
    BenchmarkResponse,
    ErrorResponse,
    HealthResponse,
    HistoryResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)

if TYPE_CHECKING:
    from subscriber.node import ServingNode
    from subscriber.snapshot import ServedModel

__all__ = ["INLINE_ROWS", "metrics_router", "router"]

INLINE_ROWS = 64
MAX_WARMUP = 10_000
MAX_ITERATIONS = 10_000
MAX_BENCHMARK_ROWS = 2_000_000

Responses = dict[int | str, dict[str, Any]]
NO_MODEL: Responses = {503: {"model": ErrorResponse, "description": "No model is served yet"}}
BAD_INPUT: Responses = {
    400: {"model": ErrorResponse, "description": "Wrong state size or non-finite"}
}
UNAUTHORIZED: Responses = {
    401: {"model": ErrorResponse, "description": "FKS_API_KEY set, key missing"}
}

router = APIRouter(prefix="/sac", tags=["sac"])
metrics_router = APIRouter(tags=["metrics"])


async def get_node(request: Request) -> ServingNode:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    if node is None:
        why = getattr(request.app.state, "fks_unavailable", "the /sac lifespan is not running")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=why)
    return node


Node = Annotated["ServingNode", Depends(get_node)]


async def get_authorized_node(request: Request) -> ServingNode:
    """Auth and node lookup in one dependency (each dependency costs FastAPI ~35 µs)."""
    await require_api_key(request)
    return await get_node(request)


AuthorizedNode = Annotated["ServingNode", Depends(get_authorized_node)]


async def served_model(node: ServingNode) -> ServedModel:
    """The snapshot this request uses: inline in Redis mode, else via the fallback's stat."""
    model = node.holder.current() if node.listener.connected else None
    if model is None:
        model = await run_in_threadpool(node.model_for_request)
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no model loaded yet")
    return model


def to_states(rows: list[list[float]], state_dim: int, name: str) -> npt.NDArray[np.float32]:
    """Rows as a float32 matrix; 400 for ragged rows, a wrong size or non-finite values."""
    if not rows:
        raise _bad(f"{name} is empty")
    if len(rows) == 1 and len(rows[0]) == state_dim:
        pass  # the common single-row case skips the scan below
    elif any(len(row) != state_dim for row in rows):
        i = next(i for i, row in enumerate(rows) if len(row) != state_dim)
        where = f"{name}[{i}]" if name == "states" else name
        raise _bad(f"{where} has {len(rows[i])} values; the served policy expects {state_dim}")
    with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: caught just below
        states = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(states).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(states))[0])
        where = f"{name}[{i}][{j}]" if name == "states" else f"{name}[{j}]"
        raise _bad(f"{where} is not finite (or outside the float32 range): {rows[i][j]!r}")
    return states


def _json(body: PredictResponse | BatchResponse) -> Response:
    """The hot routes return their already-validated model as JSON: FastAPI would validate it
    a second time against ``response_model`` (kept for the OpenAPI schema)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _raw_json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def _bad(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)


def _echo(model: ServedModel) -> dict[str, Any]:
    return {
        "model_path": str(model.path),
        "model_mtime_utc": model.mtime_utc,
        "version": model.version,
        "generation": model.generation,
        "jit_compiled": model.jit_compiled,
    }


def _info(model: ServedModel) -> ModelInfo:
    return ModelInfo(
        path=str(model.path),
        mtime_utc=model.mtime_utc,
        version=model.version,
        generation=model.generation,
        model_name=model.model_name,
        training_step=model.training_step,
        state_dim=model.state_dim,
        action_dim=model.action_dim,
        jit_compiled=model.jit_compiled,
        loaded_at=model.loaded_at.isoformat().replace("+00:00", "Z"),
        source=model.source,
        sha256=model.sha256,
    )


# -- public ------------------------------------------------------------------------------


@router.get("/health", response_model=HealthResponse, summary="Liveness; never needs auth")
async def health(request: Request) -> HealthResponse:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    if node is None:
        return HealthResponse(
            status="degraded", model_loaded=False, redis_connected=False, mode="mtime"
        )
    connected = node.listener.connected
    return HealthResponse(
        status="ok",
        model_loaded=node.holder.current() is not None,
        redis_connected=connected,
        mode="redis" if connected else "mtime",
    )


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model is served"}},
    summary="Readiness: 200 once a model is served; never needs auth",
)
async def ready(request: Request, response: Response) -> ReadyResponse:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    model = await run_in_threadpool(node.model_for_request) if node else None
    if model is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyResponse(ready=False)
    return ReadyResponse(ready=True, version=model.version, generation=model.generation)


# -- protected ---------------------------------------------------------------------------


@router.get(
    "/model/info",
    response_model=ModelInfo,
    responses={**NO_MODEL, **UNAUTHORIZED},
    summary="What is served",
)
async def model_info(node: AuthorizedNode) -> ModelInfo:
    return _info(await served_model(node))


@router.get(
    "/model/history",
    response_model=HistoryResponse,
    responses=UNAUTHORIZED,
    summary="Generations served and the reasons of every skip, rejection and failure",
)
async def model_history(node: AuthorizedNode, limit: int = 100) -> HistoryResponse:
    events = node.holder.events.recent(max(0, min(limit, 1000)))
    return HistoryResponse(generations=node.holder.history(), events=[e.to_dict() for e in events])


@router.post(
    "/model/reload",
    response_model=ModelInfo,
    responses={
        **UNAUTHORIZED,
        503: {"model": ErrorResponse, "description": "Nothing to load"},
        500: {"model": ErrorResponse, "description": "Load failed; the old model is served"},
    },
    summary="Hard reload of the resolved checkpoint (mtime ignored)",
)
async def model_reload(node: AuthorizedNode) -> ModelInfo:
    try:
        model = await run_in_threadpool(node.holder.reload)
    except NothingToLoad as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except CheckpointError as exc:
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"reload failed ({exc.reason}): {exc}; the previous model is still served",
        ) from None
    return _info(model)


@router.post(
    "/model/rollback",
    response_model=ModelInfo,
    responses={**UNAUTHORIZED, 409: {"model": ErrorResponse, "description": "None kept"}},
    summary="Swap the previous model back in",
)
async def model_rollback(node: AuthorizedNode) -> ModelInfo:
    try:
        model = await run_in_threadpool(node.holder.rollback)
    except NoPreviousModel as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _info(model)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={**NO_MODEL, **BAD_INPUT, **UNAUTHORIZED},
    summary="One action for one state",
)
async def predict(body: PredictRequest, request: Request) -> Response:
    # The two hot routes call the auth-and-node check themselves instead of declaring it as a
    # dependency: FastAPI's dependency machinery cost ~35 µs a request, ~8% of the route
    # (bench/http.py measures the route against a bare endpoint; the target is >= 0.9x).
    node = await get_authorized_node(request)
    model = await served_model(node)
    states = to_states([body.state], model.state_dim, "state")
    start = time.perf_counter()
    actions = model.runner(states, body.deterministic)
    elapsed = time.perf_counter() - start
    node.metrics.predict_latency.observe(elapsed)
    row = actions[0].tolist()
    # The hot route builds its JSON directly (the fields of PredictResponse, which documents
    # it): validating a response model it just built cost ~5% of its throughput.
    return _raw_json(
        {
            "action": row[0] if model.action_dim == 1 else row,
            **_echo(model),
            "latency_ms": elapsed * 1e3,
        }
    )


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses={
        **NO_MODEL,
        **BAD_INPUT,
        **UNAUTHORIZED,
        413: {"model": ErrorResponse, "description": "More rows than FKS_MAX_BATCH_ROWS"},
    },
    summary="Actions for many states",
)
async def predict_batch(body: BatchRequest, request: Request) -> Response:
    node = await get_authorized_node(request)  # see predict()
    limit = node.settings.max_batch_rows
    if len(body.states) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{len(body.states)} rows, over the limit of {limit} (FKS_MAX_BATCH_ROWS)",
        )
    model = await served_model(node)
    states = to_states(body.states, model.state_dim, "states")

    def infer() -> tuple[npt.NDArray[np.float32], float]:
        start = time.perf_counter()
        out = model.runner(states, body.deterministic)
        return out, time.perf_counter() - start

    actions, elapsed = infer() if len(states) <= INLINE_ROWS else await run_in_threadpool(infer)
    node.metrics.batch_latency.observe(elapsed)
    listed: list[float] | list[list[float]] = (
        actions[:, 0].tolist() if model.action_dim == 1 else actions.tolist()
    )
    return _json(
        BatchResponse(
            actions=listed, batch_size=len(states), latency_ms=elapsed * 1e3, **_echo(model)
        )
    )


@router.post(
    "/benchmark",
    response_model=BenchmarkResponse,
    responses={**NO_MODEL, **UNAUTHORIZED, 400: {"model": ErrorResponse, "description": "Caps"}},
    summary="Time the served policy in-process",
)
async def benchmark(body: BenchmarkRequest, node: AuthorizedNode) -> BenchmarkResponse:
    limit = node.settings.max_batch_rows
    total = body.batch_size * (body.warmup + body.iterations)
    if (
        body.batch_size > limit
        or body.warmup > MAX_WARMUP
        or body.iterations > MAX_ITERATIONS
        or total > MAX_BENCHMARK_ROWS
    ):
        raise _bad(
            f"over the caps: batch_size <= {limit}, warmup <= {MAX_WARMUP}, "
            f"iterations <= {MAX_ITERATIONS}, batch_size*(warmup+iterations) <= "
            f"{MAX_BENCHMARK_ROWS}"
        )
    model = await served_model(node)
    samples = await run_in_threadpool(_time_runner, model, body)
    ordered = sorted(samples)
    return BenchmarkResponse(
        batch_size=body.batch_size,
        iterations=body.iterations,
        p50_ms=_pct(ordered, 50),
        p90_ms=_pct(ordered, 90),
        p99_ms=_pct(ordered, 99),
        mean_ms=math.fsum(ordered) / len(ordered),
        jit_compiled=model.jit_compiled,
    )


def _time_runner(model: ServedModel, body: BenchmarkRequest) -> list[float]:
    rng = np.random.default_rng(0)
    states = rng.standard_normal((body.batch_size, model.state_dim), dtype=np.float32)
    for _ in range(body.warmup):
        model.runner(states)
    samples = []
    for _ in range(body.iterations):
        start = time.perf_counter()
        model.runner(states)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@metrics_router.get(
    "/metrics",
    dependencies=[ApiKey],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    body = generate_latest(node.metrics.registry) if node else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
