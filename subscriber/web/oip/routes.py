"""The Open Inference Protocol's HTTP/REST routes under ``/v2`` (KServe v2, SPEC §14).

Health, server and model metadata, readiness, inference (JSON and binary tensors), and the
model repository's index and load. A model is named by its instance id; a request captures
one served model (the served version, or with ``/versions/{v}`` the served or the rollback
one) and uses it to the end, as ``/sac/predict`` does, with the same API key, body bounds,
batch and activation limits, and the same policy call. Every refusal is ``{"error": …}``:
400 for a bad tensor (shape, datatype, a value or an action that is not finite), 404 for an
unknown model or version, 413 over the limits, 503 with no model yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from common.errors import CheckpointError
from subscriber.errors import NotEveryWorker, NothingToLoad
from subscriber.model.budget import over_activation_budget
from subscriber.web.auth import require_api_key
from subscriber.web.bodyguard import DEFAULT_MAX_BODY_BYTES
from subscriber.web.deps import get_nodes, served_model
from subscriber.web.inputs import not_finite_at
from subscriber.web.oip.errors import protocol_errors
from subscriber.web.oip.metadata import (
    EXTENSIONS,
    INPUT,
    SERVER_NAME,
    model_metadata,
    output_specs,
    server_version,
    versions,
)
from subscriber.web.oip.schemas import (
    BODY_REFUSALS,
    INFER_BODY,
    REFUSALS,
    IndexEntry,
    InferAnswer,
    LiveAnswer,
    ModelMetadataAnswer,
    ModelReadyAnswer,
    OipErrorAnswer,
    ReadyAnswer,
    ServerMetadataAnswer,
)
from subscriber.web.oip.tensors import (
    BINARY_HEADER,
    InferRequest,
    OipError,
    Output,
    brief,
    brief_names,
    decoded,
    encode_answer,
    json_object,
    parse_request,
)
from subscriber.web.predict import count_served, run_policy

if TYPE_CHECKING:
    from subscriber.model.snapshot import ServedModel
    from subscriber.node import ServingNode

__all__ = ["oip_router"]

oip_router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

Work = Callable[[Request, "ServingNode", "ServedModel", str], Awaitable[Response]]


async def _nodes(request: Request) -> dict[str, ServingNode]:
    """The models this server answers for, by name (the instance id), after the key check."""
    await require_api_key(request)
    return await get_nodes(request)


async def _node(request: Request, name: str) -> ServingNode:
    nodes = await _nodes(request)
    if name not in nodes:
        raise OipError(404, f"unknown model {brief(name)}; this node serves {', '.join(nodes)}")
    return nodes[name]


async def _model(node: ServingNode, name: str, version: str | None) -> ServedModel:
    """The snapshot a request uses: the served model, or the named version of it (the
    served one or the one kept for rollback); 404 for any other version."""
    model = await served_model(node)
    if version is None or version == str(model.version):
        return model
    previous = node.holder.previous
    if previous is not None and version == str(previous.version):
        return previous
    served = ", ".join(versions(model, previous))
    raise OipError(
        404, f"model {brief(name)} has no version {brief(version)}; it answers for {served}"
    )


async def _answer(request: Request, name: str, version: str | None, work: Work) -> Response:
    """``work`` for the model named (and its version); a refusal raises, and is answered
    ``{"error": …}`` by :func:`protocol_errors` around each route."""
    node = await _node(request, name)
    return await work(request, node, await _model(node, name, version), name)


# -- the server --------------------------------------------------------------------------


@oip_router.get(
    "",
    summary="Server metadata",
    responses={200: {"model": ServerMetadataAnswer}, 401: REFUSALS[401]},
)
@protocol_errors
async def server_metadata(request: Request) -> JSONResponse:
    await require_api_key(request)
    return JSONResponse(
        {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}
    )


@oip_router.get(
    "/health/live",
    summary="Liveness: 200 while the server runs; no key",
    responses={200: {"model": LiveAnswer}},
)
async def server_live() -> JSONResponse:
    return JSONResponse({"live": True})


@oip_router.get(
    "/health/ready",
    summary="Readiness: 200 once every model is served; no key",
    responses={200: {"model": ReadyAnswer}, 400: {"model": ReadyAnswer, "description": "Not yet"}},
)
async def server_ready(request: Request) -> JSONResponse:
    nodes: dict[str, ServingNode] = getattr(request.app.state, "fks_nodes", None) or {}
    for waiting in (n for n in nodes.values() if n.holder.current() is None):
        # a look at the disk (a request to it would look too): a checkpoint put there makes
        # the node ready without waiting for a request to that model, and the probe never waits
        waiting.look_soon()
    ready = bool(nodes) and all(n.holder.current() is not None for n in nodes.values())
    return JSONResponse({"ready": ready}, status_code=200 if ready else 400)


# -- a model -----------------------------------------------------------------------------


async def _metadata(request: Request, node: ServingNode, model: ServedModel, name: str) -> Response:
    previous = node.holder.previous if model is node.holder.current() else None
    return JSONResponse(model_metadata(name, model, previous))


async def _ready(request: Request, node: ServingNode, model: ServedModel, name: str) -> Response:
    return JSONResponse({"name": name, "ready": True})


def _served(work: Work) -> Callable[[Request, str], Awaitable[Response]]:
    @protocol_errors
    async def route(request: Request, name: str) -> Response:
        return await _answer(request, name, None, work)

    return route


def _of_version(work: Work) -> Callable[[Request, str, str], Awaitable[Response]]:
    @protocol_errors
    async def route(request: Request, name: str, version: str) -> Response:
        return await _answer(request, name, version, work)

    return route


async def _infer(request: Request, node: ServingNode, model: ServedModel, name: str) -> Response:
    limit = getattr(request.app.state, "fks_max_body_bytes", None) or DEFAULT_MAX_BODY_BYTES
    body = decoded(await request.body(), request.headers.get("content-encoding"), limit)
    parsed = parse_request(body, request.headers.get(BINARY_HEADER))
    states = _states(parsed, model, node)
    deterministic = parsed.parameters.get("deterministic", True)
    if not isinstance(deterministic, bool):
        raise OipError(400, "parameters.deterministic must be true or false")
    actions, elapsed = await run_policy(request.app, node, model, states, deterministic)
    node.metrics.infer_latency.observe(elapsed)
    count_served(node, model, actions, row="row {} of 'state'")
    outputs = _outputs(parsed, model, actions)
    content, headers = encode_answer(name, str(model.version), parsed.id, outputs)
    return Response(content, headers=headers)


def _states(parsed: InferRequest, model: ServedModel, node: ServingNode) -> np.ndarray[Any, Any]:
    """The request's one input as the model's rows; 400 for anything else, 413 over limits."""
    wanted = [-1, *model.io.input_shape]
    names = [t.name for t in parsed.inputs]
    if names != [INPUT]:
        raise OipError(
            400, f"the model takes one input, {INPUT!r} (FP32 {wanted}); got {brief_names(names)}"
        )
    tensor = parsed.inputs[0]
    if tensor.datatype != "FP32":
        raise OipError(400, f"input {INPUT!r} is FP32, not {tensor.datatype}")
    shape = tensor.array.shape
    if len(shape) != len(wanted) or shape[1:] != model.io.input_shape or shape[0] < 1:
        raise OipError(400, f"input {INPUT!r} has shape {list(shape)}; the model takes {wanted}")
    rows = shape[0]
    limit = node.settings.max_batch_rows
    if rows > limit:
        raise OipError(413, f"{rows} rows, over the limit of {limit} (FKS_MAX_BATCH_ROWS)")
    if (why := over_activation_budget(rows, model, node.settings)) is not None:
        raise OipError(413, why)
    states = tensor.array
    if (where := not_finite_at(states)) is not None:
        raise OipError(400, f"input {INPUT!r}{where} is not finite (or outside the FP32 range)")
    # one writable, contiguous float32 block, as /sac/predict hands the runner: a binary
    # input is a read-only view of the body, which torch refuses to wrap (it could write)
    return np.array(
        states, dtype=np.float32, order="C", copy=None if states.flags.writeable else True
    )


def _outputs(
    parsed: InferRequest, model: ServedModel, actions: np.ndarray[Any, Any]
) -> list[Output]:
    if model.discrete:
        produced = {
            "action": ("INT64", np.argmax(actions, axis=1).astype(np.int64)),
            "q_values": ("FP32", actions),
        }
    else:
        produced = {"action": ("FP32", actions)}
    requested: list[tuple[str, bool | None]]
    if parsed.outputs is None:
        requested = [(spec["name"], None) for spec in output_specs(model)]
    else:
        requested = [(out.name, out.binary) for out in parsed.outputs]
    outputs: list[Output] = []
    for out_name, binary in requested:
        if out_name not in produced:
            raise OipError(
                400, f"the model has no output {brief(out_name)}; it gives {list(produced)}"
            )
        datatype, array = produced[out_name]
        outputs.append(
            Output(out_name, datatype, array, parsed.binary_output if binary is None else binary)
        )
    return outputs


# Each model route twice: for the served model, and for a version of it (``/versions/{v}``:
# the served one or the one kept for rollback, else 404).
_MODEL_ROUTES: tuple[tuple[str, str, Work, str, dict[int | str, dict[str, Any]]], ...] = (
    ("GET", "", _metadata, "Model metadata", {200: {"model": ModelMetadataAnswer}, **REFUSALS}),
    (
        "GET",
        "/ready",
        _ready,
        "200 when served (a version: served or kept for rollback)",
        {200: {"model": ModelReadyAnswer}, **REFUSALS},
    ),
    (
        "POST",
        "/infer",
        _infer,
        "Inference (JSON, or Triton's binary tensor data)",
        {
            200: {
                "model": InferAnswer,
                "description": "JSON; with binary outputs, the JSON (its length in "
                "Inference-Header-Content-Length) then their bytes (application/octet-stream)",
            },
            **BODY_REFUSALS,
        },
    ),
)
for _method, _tail, _work, _summary, _responses in _MODEL_ROUTES:
    _extra = {"requestBody": INFER_BODY} if _method == "POST" else None
    oip_router.add_api_route(
        "/models/{name}" + _tail,
        _served(_work),
        methods=[_method],
        summary=_summary,
        responses=_responses,
        openapi_extra=_extra,
    )
    oip_router.add_api_route(
        "/models/{name}/versions/{version}" + _tail,
        _of_version(_work),
        methods=[_method],
        summary=f"{_summary}, of a version",
        responses=_responses,
        openapi_extra=_extra,
    )


# -- the model repository (Triton's extension) -------------------------------------------


@oip_router.post(
    "/repository/index",
    summary="The models with their state",
    responses={
        200: {"model": list[IndexEntry]},
        400: {"model": OipErrorAnswer, "description": 'A body that is not {"ready": bool}'},
        401: REFUSALS[401],
    },
)
@protocol_errors
async def repository_index(request: Request) -> Response:
    nodes = await _nodes(request)
    query = _json_object(await request.body())
    only_ready = query.get("ready", False)
    if not isinstance(only_ready, bool):
        raise OipError(400, "ready must be true or false")
    index = []
    for name, node in nodes.items():
        model = node.holder.current()
        if model is not None:
            index.append(
                {"name": name, "version": str(model.version), "state": "READY", "reason": ""}
            )
        elif not only_ready:
            reason = "no model loaded yet"
            index.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": reason})
    return JSONResponse(index)


@oip_router.post(
    "/repository/models/{name}/load",
    summary="Load the model again: today's /sac/model/reload (on every worker)",
    responses={
        200: {"model": IndexEntry},
        400: {"model": OipErrorAnswer, "description": "Parameters (a config, files) sent"},
        500: {"model": OipErrorAnswer, "description": "Load failed; the old model is served"},
        **REFUSALS,
    },
)
@protocol_errors
async def repository_load(request: Request, name: str) -> Response:
    node = await _node(request, name)
    asked = _json_object(await request.body())
    if set(asked) - {"parameters"}:
        raise OipError(400, f"load takes only parameters, not {brief(sorted(asked))}")
    parameters = asked.get("parameters", {})
    if not isinstance(parameters, dict):
        raise OipError(400, "parameters must be a JSON object")
    if parameters:
        raise OipError(
            400,
            f"load takes no parameters here (got {brief(sorted(parameters))}): a node loads only "
            "checkpoints from its model roots and Redis, never a config or files sent to it",
        )
    try:
        done = await run_in_threadpool(node.operations.reload)
    except NothingToLoad as exc:
        raise OipError(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except CheckpointError as exc:
        why = f"load failed ({exc.reason}): {exc}; the previous model is still served"
        raise OipError(status.HTTP_500_INTERNAL_SERVER_ERROR, why) from None
    except NotEveryWorker as exc:
        raise OipError(exc.status, str(exc)) from None
    answer = {"name": name, "version": str(done.model.version), "state": "READY"}
    return JSONResponse(answer, headers={"X-FKS-Workers": ",".join(done.nodes)})  # as /sac's


@oip_router.post(
    "/repository/models/{name}/unload",
    summary="Not supported: 400",
    responses={400: {"model": OipErrorAnswer, "description": "Always"}, **REFUSALS},
)
@protocol_errors
async def repository_unload(request: Request, name: str) -> Response:
    await _node(request, name)
    raise OipError(400, f"unload is not supported: a node serves {name!r} for as long as it runs")


def _json_object(body: bytes) -> dict[str, Any]:
    """An optional JSON object body (empty: ``{}``), as the repository's requests send."""
    return json_object(body, "the body") if body.strip() else {}
