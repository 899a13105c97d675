"""Request-scoped access to the serving node (``app.state``), shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from subscriber.web.auth import require_api_key
from subscriber.web.schemas import ErrorResponse

if TYPE_CHECKING:
    from subscriber.model.snapshot import ServedModel
    from subscriber.node import ServingNode

__all__ = [
    "BAD_INPUT", "BODY_LIMITS", "NO_MODEL", "UNAUTHORIZED", "AuthorizedNode", "Responses", "bad",
    "error", "get_authorized_node", "get_node", "get_nodes", "served_model",
]  # fmt: skip

Responses = dict[int | str, dict[str, Any]]


def error(description: str) -> dict[str, Any]:
    """One error answer of a route's OpenAPI ``responses``: an :class:`ErrorResponse`, and when."""
    return {"model": ErrorResponse, "description": description}


NO_MODEL: Responses = {503: error("No model is served yet")}
BAD_INPUT: Responses = {400: error("Wrong state size, non-finite state or action")}
UNAUTHORIZED: Responses = {401: error("FKS_API_KEY set, key missing or wrong")}
BODY_LIMITS: Responses = {
    408: error("Body not received in FKS_BODY_TIMEOUT_SECONDS"),
    413: error("Body over 8 MiB"),
    503: {
        **error(
            "No model is served yet, or FKS_MAX_LARGE_BODIES large bodies are being read already"
        ),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait (only when the large-body cap is full)",
                "schema": {"type": "integer"},
            }
        },
    },
}


async def get_node(request: Request) -> ServingNode:
    node: ServingNode | None = getattr(request.app.state, "fks_node", None)
    if node is None:
        why = getattr(request.app.state, "fks_unavailable", "the /sac lifespan is not running")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=why)
    return node


async def get_nodes(request: Request) -> dict[str, ServingNode]:
    """Every instance's node, by instance id (SPEC §13), the first being :func:`get_node`'s
    (the lifespan sets both)."""
    await get_node(request)
    nodes: dict[str, ServingNode] = request.app.state.fks_nodes
    return nodes


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


def bad(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)
