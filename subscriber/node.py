"""A serving node: the holder, the listener, the fallback and the registry, wired together.

The request path calls :meth:`ServingNode.model_for_request`: while the listener is
connected and a model is served, that is two attribute reads and no I/O at all; otherwise
it is the fallback's one ``os.stat``. Nothing on the request path talks to Redis.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from common.settings import Settings
from subscriber.fallback import FallbackWatcher
from subscriber.holder import ModelHolder
from subscriber.listener import CheckpointSubscriber, ListenerTiming
from subscriber.loader import LoadOptions
from subscriber.metrics import Metrics
from subscriber.registry import NodeRegistry
from subscriber.snapshot import ServedModel

__all__ = ["ServingNode"]

log = logging.getLogger(__name__)


class ServingNode:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        metrics: Metrics | None = None,
        options: LoadOptions | None = None,
        timing: ListenerTiming | None = None,
        listen: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self.holder = ModelHolder(self.settings, metrics=metrics, options=options)
        self.metrics = self.holder.metrics
        self.fallback = FallbackWatcher(self.holder)
        self.listener = CheckpointSubscriber(self.holder, self.settings, timing=timing)
        self.registry = NodeRegistry(
            self.settings.redis_url,
            self.settings.keys,
            self.describe,
            node_id=self.settings.node_id,
            interval=self.settings.heartbeat_seconds,
        )
        self.listen = listen

    @property
    def mode(self) -> str:
        """``"redis"`` while the listener is connected, ``"mtime"`` while falling back."""
        return "redis" if self.listener.connected else "mtime"

    def model_for_request(self) -> ServedModel | None:
        """The snapshot one request uses from start to end."""
        current = self.holder.current()
        if current is not None and self.listener.connected:
            return current
        return self.fallback.check()

    def start(self) -> ServingNode:
        """Preload from disk (never fails), then listen and heartbeat.

        Sets torch's intra-op threads to ``FKS_TORCH_THREADS`` (default 1; 0 leaves it): a
        server of small policies gains nothing from them, and their spinning steals the
        CPU from Redis and the other requests (bench/swap_latency.py shows it on 2 cores).
        """
        if self.settings.torch_threads > 0:
            torch.set_num_threads(self.settings.torch_threads)
        try:
            self.fallback.check()
        except Exception:  # noqa: BLE001 - the server must start without a model
            log.exception("preloading a checkpoint failed; starting without a model")
        if self.holder.current() is None:
            log.warning("no checkpoint served yet; /sac answers 503 until one appears")
        if self.listen:
            self.listener.start()
            self.registry.start()
        return self

    def stop(self) -> None:
        self.listener.stop()
        if self.listen:
            self.registry.stop()
        self.holder.trim.cancel()

    def describe(self) -> dict[str, Any]:
        model = self.holder.current()
        return {
            "mode": self.mode,
            "version": model.version if model else None,
            "generation": model.generation if model else None,
            "path": str(model.path) if model else None,
            "loaded_at": model.loaded_at.isoformat() if model else None,
            "model_name": model.model_name if model else None,
        }
