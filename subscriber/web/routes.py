"""The model-management routes of ``/sac`` (SPEC §5) and ``/metrics``.

Health, readiness, what is served, its history, reload and rollback. They only read the node
(``app.state``) or ask it to act (reload and rollback: on every worker of the port,
``subscriber/process/operations.py``); health and readiness answer from that state alone,
never behind a load or the threadpool. The inference routes live in :mod:`subscriber.web.predict`
and :mod:`subscriber.web.benchmark`. Nothing here imports torch at module level: with a broken
torch the app still starts and answers 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from common.errors import CheckpointError
from subscriber.errors import ModelChanged, NoPreviousModel, NotEveryWorker, NothingToLoad
from subscriber.model.budget import largest_batch
from subscriber.web.auth import ApiKey
from subscriber.web.deps import (
    NO_MODEL,
    UNAUTHORIZED,
    AuthorizedNode,
    Responses,
    error,
    served_model,
)
from subscriber.web.schemas import HealthResponse, HistoryResponse, ModelInfo, ReadyResponse

if TYPE_CHECKING:
    from common.settings import Settings
    from subscriber.model.snapshot import ServedModel
    from subscriber.node import ServingNode
    from subscriber.process.operations import Done

__all__ = ["metrics_router", "router"]

router = APIRouter(prefix="/sac", tags=["sac"])
metrics_router = APIRouter(tags=["metrics"])


def _info(model: ServedModel, settings: Settings) -> ModelInfo:
    return ModelInfo(
        path=str(model.path),
        mtime_utc=model.mtime_utc,
        version=model.version,
        generation=model.generation,
        model_name=model.model_name,
        training_step=model.training_step,
        state_dim=model.state_dim,
        action_dim=model.action_dim,
        architecture=model.architecture,
        input_shape=list(model.io.input_shape),
        output_shape=list(model.io.output_shape or ()),
        discrete=model.discrete,
        activation_bytes_per_row=model.io.cost.per_row,
        max_batch_rows=largest_batch(model, settings),
        jit_compiled=model.jit_compiled,
        loaded_at=model.loaded_at.isoformat().replace("+00:00", "Z"),
        source=model.source,
        sha256=model.sha256,
        origin=model.origin,
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
    # From state only: no load, no stat, no thread, so readiness never queues behind work.
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    model = node.holder.current() if node is not None else None
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
    return _info(await served_model(node), node.settings)


@router.get(
    "/model/history",
    response_model=HistoryResponse,
    responses=UNAUTHORIZED,
    summary="Generations served and the reasons of every skip, rejection and failure",
)
async def model_history(node: AuthorizedNode, limit: int = 100) -> HistoryResponse:
    events = node.holder.events.recent(max(0, min(limit, 1000)))
    return HistoryResponse(generations=node.holder.history(), events=[e.to_dict() for e in events])


async def _on_every_worker(
    operation: Callable[[], Done], response: Response, settings: Settings
) -> ModelInfo:
    """Run ``operation`` (a reload or rollback of ``node.operations``) off the loop: what this
    worker serves after it, with every worker of the port that did it, this one first, in
    ``X-FKS-Workers`` (`fks serve --workers N`). Each refusal is an HTTP status here."""
    try:
        done = await run_in_threadpool(operation)
    except NothingToLoad as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except CheckpointError as exc:  # only a reload loads
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"reload failed ({exc.reason}): {exc}; the previous model is still served",
        ) from None
    except (NoPreviousModel, ModelChanged) as exc:  # only a rollback
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    except NotEveryWorker as exc:
        raise HTTPException(exc.status, detail=str(exc)) from None
    response.headers["X-FKS-Workers"] = ",".join(done.nodes)
    return _info(done.model, settings)


async def model_reload(node: AuthorizedNode, response: Response) -> ModelInfo:
    return await _on_every_worker(node.operations.reload, response, node.settings)


async def model_rollback(node: AuthorizedNode, response: Response) -> ModelInfo:
    return await _on_every_worker(node.operations.rollback, response, node.settings)


# The operator's two POSTs, run on every worker: the route, its summary, and what it answers
# besides the served model (200) and a missing key (401).
_ON_EVERY_WORKER: tuple[tuple[Callable[..., Awaitable[ModelInfo]], str, str, Responses], ...] = (
    (
        model_reload,
        "/model/reload",
        "Hard reload of the resolved checkpoint (mtime ignored), on every worker",
        {
            503: error("Nothing to load, or a worker of the port did not answer"),
            500: error("Load failed; the old model is served"),
        },
    ),
    (
        model_rollback,
        "/model/rollback",
        "Swap the previous model back in, on every worker",
        {
            409: error("None kept, or the workers of the port do not serve the same models"),
            503: error("A worker of the port did not answer"),
        },
    ),
)
for _endpoint, _path, _summary, _refusals in _ON_EVERY_WORKER:
    router.add_api_route(
        _path,
        _endpoint,
        methods=["POST"],
        response_model=ModelInfo,
        responses={**UNAUTHORIZED, **_refusals},
        summary=_summary,
    )


@metrics_router.get(
    "/metrics",
    dependencies=[ApiKey],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **UNAUTHORIZED,
    },
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    body = generate_latest(node.metrics.registry) if node else b""
    # which node (worker of `fks serve --workers N`) answered; also fks_node_info{node}
    headers = {"X-FKS-Node": node.node_id} if node else None
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)
