"""The inference routes: ``/sac/predict`` and ``/sac/predict/batch``.

Each request captures the served model once (:func:`~subscriber.web.deps.served_model`) and uses
that snapshot to the end, so a swap mid-request never mixes two models. Handlers are
``async``: in Redis mode the snapshot read and a small forward pass (tens of µs) run inline,
which is cheaper than a thread hop; the fallback's stat-and-maybe-load runs in the threadpool
and a big pass (many rows or a big model, :func:`~subscriber.web.modelwork.runs_inline`) on the
model-work limiter, so the event loop keeps serving other requests (bench/http.py measures
the choice). An action that is not finite (a state can overflow a policy) is a 400, never
a ``NaN`` in the JSON. Each request is counted against the generation it used, and so is an
error of the model (a non-finite action, an exception while inferring): the registry carries
both since the last swap (``subscriber/runtime/traffic.py``), and ``fks rollout`` watches them.
Rows that would make the model hold more than ``FKS_MAX_ACTIVATION_BYTES`` are a 413 before
the states are even converted (``subscriber/model/budget.py``).
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status

from subscriber.model.budget import over_activation_budget
from subscriber.web.deps import (
    BAD_INPUT,
    BODY_LIMITS,
    NO_MODEL,
    UNAUTHORIZED,
    Responses,
    bad,
    error,
    get_authorized_node,
    served_model,
)
from subscriber.web.inputs import to_inputs
from subscriber.web.modelwork import run_model_work, runs_inline
from subscriber.web.schemas import (
    BatchRequest,
    BatchResponse,
    DiscreteBatchResponse,
    DiscretePredictResponse,
    PredictRequest,
    PredictResponse,
)

if TYPE_CHECKING:
    from subscriber.model.snapshot import ServedModel
    from subscriber.node import ServingNode

__all__ = [
    "answer_one", "count_served", "json_text", "predict_router", "run_policy", "served_fields",
    "to_states",
]  # fmt: skip

Matrix = npt.NDArray[np.float32]

predict_router = APIRouter(prefix="/sac", tags=["sac"])

TOO_LARGE = (
    "More rows than FKS_MAX_BATCH_ROWS, or than FKS_MAX_ACTIVATION_BYTES allows for the served "
    "model (the reason names the largest batch it takes), or a body over 8 MiB"
)
# what both inference routes answer besides their actions
RESPONSES: Responses = {
    **NO_MODEL,
    **BAD_INPUT,
    **UNAUTHORIZED,
    **BODY_LIMITS,
    413: error(TOO_LARGE),
}


def to_states(rows: list[Any], state_dim: int, name: str) -> Matrix:
    """Rows as a float32 matrix; 400 for ragged rows, a wrong size or non-finite values."""
    if not rows:
        raise bad(f"{name} is empty")
    if len(rows) == 1 and len(rows[0]) == state_dim:
        pass  # the common single-row case skips the scan below
    elif any(len(row) != state_dim for row in rows):
        i = next(i for i, row in enumerate(rows) if len(row) != state_dim)
        where = f"{name}[{i}]" if name == "states" else name
        raise bad(f"{where} has {len(rows[i])} values; the served policy expects {state_dim}")
    with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: caught just below
        states = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(states).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(states))[0])
        where = f"{name}[{i}][{j}]" if name == "states" else f"{name}[{j}]"
        raise bad(f"{where} is not finite (or outside the float32 range): {rows[i][j]!r}")
    return states


def _rows(rows: list[Any], model: ServedModel, name: str) -> Matrix:
    """The request's rows as the model's input: the fast flat path for one-state models."""
    flat = not rows or all(isinstance(v, float | int) for v in rows[0])
    if len(model.io.input_shape) == 1 and flat:
        return to_states(rows, model.state_dim, name)
    return to_inputs(rows, model.io, name)


def _json(body: BatchResponse | DiscreteBatchResponse) -> Response:
    """The hot routes return their already-validated model as JSON: FastAPI would validate it
    a second time against ``response_model`` (kept for the OpenAPI schema)."""
    return Response(body.model_dump_json(), media_type="application/json")


def _raw_json(body: dict[str, Any]) -> Response:
    return Response(json_text(body), media_type="application/json")


def json_text(body: dict[str, Any]) -> str:
    # allow_nan=False: a NaN that slipped through is a 500, never an invalid JSON token.
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


async def run_policy(
    app: FastAPI, node: ServingNode, model: ServedModel, states: Matrix, deterministic: bool
) -> tuple[Matrix, float]:
    """The actions and the seconds they took: inline when short, else off the loop. Whatever
    it raises is counted as an error of ``model``."""

    def infer() -> tuple[Matrix, float]:
        start = time.perf_counter()
        out = model.runner(states, deterministic)
        return out, time.perf_counter() - start

    try:
        if runs_inline(len(states), model.parameters):
            return infer()
        return await run_model_work(app, infer)
    except Exception:
        node.traffic.served(model.generation, error=True)
        raise


def count_served(
    node: ServingNode, model: ServedModel, actions: Matrix, row: str = "states[{}]"
) -> None:
    """Count a request of many rows against ``model``'s generation: as an error of the model,
    and a 400 naming the first such row (``row``, formatted with its index), when an action
    is not finite."""
    finite = np.isfinite(actions).all(axis=1)
    if not finite.all():
        node.traffic.served(model.generation, error=True)
        raise _not_finite(row.format(int(np.argmin(finite))))
    node.traffic.served(model.generation)


def _not_finite(where: str) -> HTTPException:
    return bad(
        f"the policy's action for {where} is not finite (NaN or infinite: the state overflows "
        "the network); send states in the range the policy was trained on"
    )


def served_fields(model: ServedModel) -> dict[str, Any]:
    """What every answer says of the model that gave it (SPEC §5)."""
    return {
        "model_path": str(model.path),
        "model_mtime_utc": model.mtime_utc,
        "version": model.version,
        "generation": model.generation,
        "jit_compiled": model.jit_compiled,
    }


@predict_router.post(
    "/predict",
    response_model=PredictResponse | DiscretePredictResponse,
    responses=RESPONSES,
    summary="One action for one state",
)
async def predict(body: PredictRequest, request: Request) -> Response:
    # The two hot routes call the auth-and-node check themselves instead of declaring it as a
    # dependency: FastAPI's dependency machinery cost ~35 µs a request, ~8% of the route
    # (bench/http.py measures the route against a bare endpoint). A plain JSON body is answered
    # in front of FastAPI by the same code (subscriber/web/hotpath.py).
    node = await get_authorized_node(request)
    return _raw_json(await answer_one(request.app, node, body.state, body.deterministic))


async def answer_one(
    app: FastAPI, node: ServingNode, state: list[Any], deterministic: bool
) -> dict[str, Any]:
    """The answer of ``/sac/predict`` for one state (its JSON as a dict); HTTPException for
    a refusal (503 no model, 413 over the activation budget, 400 bad input or action)."""
    model = await served_model(node)
    if (why := over_activation_budget(1, model, node.settings)) is not None:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=why)
    states = _rows([state], model, "state")
    actions, elapsed = await run_policy(app, node, model, states, deterministic)
    node.metrics.predict_latency.observe(elapsed)
    row = actions[0].tolist()
    if not all(map(math.isfinite, row)):
        node.traffic.served(model.generation, error=True)
        raise _not_finite("this state")
    node.traffic.served(model.generation)
    if model.discrete:  # Q-values: the action is their argmax (SPEC §12)
        chosen = int(np.argmax(actions[0]))
        return {
            "action": chosen,
            "q_values": row,
            **served_fields(model),
            "latency_ms": elapsed * 1e3,
        }
    # The hot route builds its JSON directly (the fields of PredictResponse, which documents
    # it): validating a response model it just built cost ~5% of its throughput.
    return {
        "action": row[0] if model.action_dim == 1 else row,
        **served_fields(model),
        "latency_ms": elapsed * 1e3,
    }


@predict_router.post(
    "/predict/batch",
    response_model=BatchResponse | DiscreteBatchResponse,
    responses=RESPONSES,
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
    if (why := over_activation_budget(len(body.states), model, node.settings)) is not None:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=why)
    states = _rows(body.states, model, "states")
    actions, elapsed = await run_policy(request.app, node, model, states, body.deterministic)
    node.metrics.batch_latency.observe(elapsed)
    count_served(node, model, actions)
    if model.discrete:
        return _json(
            DiscreteBatchResponse(
                actions=np.argmax(actions, axis=1).tolist(),
                q_values=actions.tolist(),
                batch_size=len(states),
                latency_ms=elapsed * 1e3,
                **served_fields(model),
            )
        )
    listed: list[float] | list[list[float]] = (
        actions[:, 0].tolist() if model.action_dim == 1 else actions.tolist()
    )
    return _json(
        BatchResponse(
            actions=listed, batch_size=len(states), latency_ms=elapsed * 1e3, **served_fields(model)
        )
    )
