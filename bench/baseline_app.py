"""The baseline for the swap-storm benchmark: hot reload done the classic way.

Every request ``os.stat``s the checkpoint; when its mtime changed, the request reloads it
(``torch.load(weights_only=True)``) under a lock, and requests arriving meanwhile wait for
that lock. This is what a server without push notifications typically does (TF Serving and
Triton poll on a timer instead, which trades this stall for seconds of staleness).

Run with ``STAT_PAIR_RL_MODEL=/path/model.pt uvicorn bench.baseline_app:create --factory``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI

from common.checkpoint import build_policy, load_checkpoint
from subscriber.inference import EagerRunner, Runner
from subscriber.schemas import PredictRequest


class Classic:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.mtime_ns = -1
        self.version = 0
        self.runner: Runner | None = None

    def fresh(self) -> Runner:
        mtime = os.stat(self.path).st_mtime_ns
        if mtime != self.mtime_ns or self.runner is None:
            with self.lock:
                if mtime != self.mtime_ns or self.runner is None:
                    loaded = load_checkpoint(self.path)
                    self.runner = EagerRunner(build_policy(loaded))
                    self.mtime_ns, self.version = loaded.mtime_ns, loaded.version
        return self.runner


def create() -> FastAPI:
    import torch

    torch.set_num_threads(1)
    classic = Classic(os.environ["STAT_PAIR_RL_MODEL"])
    app = FastAPI()

    @app.post("/sac/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        runner = classic.fresh()
        start = time.perf_counter()
        action = runner(np.asarray([body.state], dtype=np.float32), body.deterministic)
        return {
            "action": float(action[0, 0]),
            "version": classic.version,
            "latency_ms": (time.perf_counter() - start) * 1e3,
        }

    return app
