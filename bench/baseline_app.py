"""The baseline of the swap-storm benchmark: seed 000's own design, as written.

An ``async def`` predict handler calls ``ensure_fresh()`` inline, on the event loop, before
each prediction (the seed's ``_ModelHolder.ensure_fresh``):

- tier 1 (``STAT_PAIR_RL_MODEL``): one ``os.stat`` of the fixed checkpoint path;
- tier 2 (``STAT_PAIR_RL_DIR``): a glob of ``model_*`` in the directory and an ``os.stat``
  of each file, the newest mtime wins (a file deleted between the two is skipped);

and when the newest checkpoint differs from the loaded one (path or mtime), it reloads it
inline under a ``threading.Lock`` with the double check: compare, take the lock, compare
again, load, swap. Requests that arrive meanwhile wait: the loop is busy with the load.

The load and the runner are ours (``subscriber.model.loader.prepare_checkpoint``, configured from
the same environment: ``STAT_PAIR_RL_JIT``, ``FKS_COMPILE_BACKEND``, thread limits), so the
comparison isolates push (ours) from poll-inline (the seed's), nothing else. A load that
fails keeps the model served (and is retried on the next request that sees a newer file).

Run with ``STAT_PAIR_RL_MODEL=/path/model.safetensors uvicorn bench.baseline_app:create
--factory`` (or ``STAT_PAIR_RL_DIR=/path``).

Until 2026-11 this file was another design: a plain ``def`` handler (FastAPI's threadpool,
0.44x a bare endpoint by itself) around a ``torch.load`` reload; docs/BENCHMARKS.md says
what that changed.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException

from common.errors import CheckpointError
from common.settings import Settings
from subscriber.fetching.roots import ModelRoots
from subscriber.model.loader import LoadOptions, prepare_checkpoint
from subscriber.runtime.threads import limit_threads
from subscriber.web.schemas import PredictRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    path: str
    mtime_ns: int
    version: int
    runner: Any


class SeedHolder:
    """``ensure_fresh()``: stat (tier 1) or glob + stat (tier 2), reload inline if newer."""

    def __init__(self, settings: Settings) -> None:
        self.file = os.fspath(settings.model_path) if settings.model_path else None
        self.pattern = os.path.join(os.fspath(settings.model_dir or "."), "model_*")
        self.roots = ModelRoots(settings)
        self.options = LoadOptions(
            state_dim=settings.state_dim, jit=settings.jit, backend=settings.compile_backend
        )
        self.lock = threading.Lock()
        self.current: Loaded | None = None
        self.reloads = 0

    def newest(self) -> tuple[str, int] | None:
        if self.file is not None:
            try:
                return self.file, os.stat(self.file).st_mtime_ns
            except FileNotFoundError:
                return None
        best: tuple[int, str] | None = None
        for name in glob.glob(self.pattern):
            try:
                mtime = os.stat(name).st_mtime_ns
            except FileNotFoundError:  # deleted by the trainer since the glob
                continue
            if best is None or (mtime, name) > best:
                best = (mtime, name)
        return None if best is None else (best[1], best[0])

    def _stale(self, found: tuple[str, int]) -> bool:
        current = self.current
        return current is None or (current.path, current.mtime_ns) != found

    def ensure_fresh(self) -> Loaded | None:
        found = self.newest()
        if found is not None and self._stale(found):
            with self.lock:
                if self._stale(found):  # the double check: another request may have loaded it
                    self._load(*found)
        return self.current

    def _load(self, path: str, mtime_ns: int) -> None:
        try:
            prepared = prepare_checkpoint(path, self.roots, self.options)
        except CheckpointError as exc:
            log.warning("reload of %s failed (%s); serving the previous model", path, exc.reason)
            return
        loaded = prepared.loaded
        self.current = Loaded(path, mtime_ns, loaded.version, prepared.runner)
        self.reloads += 1


def create() -> FastAPI:
    settings = Settings()
    limit_threads(settings.torch_threads)  # as our node does
    holder = SeedHolder(settings)
    app = FastAPI()

    @app.post("/sac/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        model = holder.ensure_fresh()
        if model is None:
            raise HTTPException(503, "no model")
        start = time.perf_counter()
        action = model.runner(np.asarray([body.state], dtype=np.float32), body.deterministic)
        return {
            "action": float(action[0, 0]),
            "model_path": model.path,
            "version": model.version,
            "latency_ms": (time.perf_counter() - start) * 1e3,
        }

    @app.get("/sac/reloads")
    async def reloads() -> dict[str, int]:
        return {"reloads": holder.reloads}

    return app
