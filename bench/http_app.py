"""The app the HTTP benchmarks serve: ours, plus two comparison routes on the same node.

- ``POST /sac/predict``: ours (async; inline in Redis mode);
- ``POST /sync/predict``: the same work in a plain ``def`` handler (FastAPI's threadpool),
  answering the same JSON as ours for the benchmarks' policy (one continuous action);
- ``POST /bare/predict``: a bare FastAPI endpoint calling the same policy, no checks at all.

Run with ``uvicorn bench.http_app:create --factory`` (the benchmarks do).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request

from subscriber import create_app
from subscriber.web.predict import served_fields, to_states
from subscriber.web.schemas import PredictRequest


def create() -> FastAPI:
    app = create_app()

    @app.post("/sync/predict")
    def sync_predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        node = request.app.state.fks_node
        model = node.model_for_request()
        if model is None:
            raise HTTPException(503, "no model")
        states = to_states([body.state], model.state_dim, "state")
        start = time.perf_counter()
        action = model.runner(states, body.deterministic)
        elapsed = time.perf_counter() - start
        return {"action": float(action[0, 0]), **served_fields(model), "latency_ms": elapsed * 1e3}

    @app.post("/bare/predict")
    async def bare_predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        model = request.app.state.fks_node.holder.current()
        action = model.runner(np.asarray([body.state], dtype=np.float32))
        return {"action": float(action[0, 0])}

    return app
