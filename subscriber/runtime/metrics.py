"""Prometheus metrics of one serving node, in a registry of its own (``/metrics``).

Every series of the model a node serves carries ``model="<instance id>"`` (SPEC §13): what
the node serves, swaps, refuses, acks and answers (``/metrics`` writes the labels of a
series in alphabetical order: ``fks_rejections_total{model="…",reason="…"}``). The node's own
series (its listener's connection, ``fks_node_info``, the collector) carry none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from common.ack import AckOutcome

__all__ = ["ModelFamily", "Metrics"]

Family = TypeVar("Family", bound=MetricWrapperBase)
# where a swap comes from (docs/reference/metrics.md)
SWAP_SOURCES = ("channel", "latest", "mtime", "disk", "remote", "reload", "rollback")


class ModelFamily(Generic[Family]):
    """A family labelled ``model`` first, with the model fixed: ``labels(*rest)`` gives the
    series of this model for the other labels, as the family's own ``labels`` would."""

    def __init__(self, family: Family, model: str) -> None:
        self.family = family
        self.model = model
        # each series once looked up: prometheus_client's labels() checks, joins and locks on
        # every call, and the node calls it on every message it judges (issue 26). Nothing
        # removes a series, so a child kept here is the family's own for good.
        self._series: dict[tuple[str, ...], Family] = {}

    def labels(self, *values: str) -> Family:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self.family.labels(self.model, *values)
        return series


LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Every series the node exports; all names start with ``fks_``."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        model: str = "default",
        _families: dict[str, MetricWrapperBase] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.model = model
        r = self.registry
        # every family is registered once in this node's own registry, and shared by the
        # Metrics of each model it serves (for_model)
        self._families = families = {} if _families is None else _families

        def shared(kind: Callable[..., Family]) -> Callable[..., Family]:
            def make(name: str, doc: str, labels: Sequence[str] = (), **kw: object) -> Family:
                if name not in families:
                    families[name] = kind(name, doc, labels, registry=r, **kw)
                return families[name]  # type: ignore[return-value]

            return make

        counter, gauge, histogram = shared(Counter), shared(Gauge), shared(Histogram)

        def of_model(kind: Callable[..., Family], name: str, doc: str,
                     labels: Sequence[str] = (), **kw: object) -> ModelFamily[Family]:  # fmt: skip
            return ModelFamily(kind(name, doc, ["model", *labels], **kw), model)

        # the node's own series: its listener's connection, which node it is, the collector
        self.listener_connected = gauge(
            "fks_listener_connected", "1 while the Redis listener is subscribed"
        )
        self.reconnects = counter(
            "fks_listener_reconnects", "Listener (re)connections after the first"
        )
        self.node_info = gauge(
            "fks_node_info",
            "Always 1: the node id (a worker of `fks serve --workers N` has its own) and pid",
            ["node", "pid"],
        )
        self.gc_frozen = gauge(
            "fks_gc_frozen_objects",
            "Objects moved out of the collector's full passes at startup (0: FKS_GC_FREEZE=false)",
        )
        # a model's series: labelled model="<instance>" (see the module)
        counters: Callable[..., ModelFamily[Counter]] = partial(of_model, counter)
        gauges: Callable[..., ModelFamily[Gauge]] = partial(of_model, gauge)
        histograms: Callable[..., ModelFamily[Histogram]] = partial(of_model, histogram)
        self.generation = gauges("fks_model_generation", "Generation of the served model").labels()
        self.version = gauges("fks_model_version", "Version of the served model").labels()
        self.model_age = gauges(
            "fks_model_age_seconds",
            "Seconds since the served checkpoint was saved (freshness); NaN without a model",
        ).labels()
        self.swaps = counters("fks_swaps", "Models swapped in, by source", ["source"])
        self.stale_skips = counters(
            "fks_stale_skips", "Notifications skipped as not newer, by reason", ["reason"]
        )
        self.rejections = counters(
            "fks_rejections", "Notifications and checkpoints refused, by reason", ["reason"]
        )
        self.coalesced = counters(
            "fks_notifications_coalesced", "Pending notifications replaced by newer ones"
        ).labels()
        self.notifications = counters(
            "fks_notifications_received", "Notifications read (channel and :latest)", ["via"]
        )
        self.fallback_checks = counters(
            "fks_fallback_checks", "os.stat freshness checks made on the request path"
        ).labels()
        self.load_seconds = histograms(
            "fks_load_seconds", "Checkpoint verify+load+build time", buckets=LAG_BUCKETS
        ).labels()
        self.fetch_seconds = histograms(
            "fks_fetch_seconds",
            "Time to download and verify a remote checkpoint (retries included; cache hits not)",
            buckets=LAG_BUCKETS + (30.0, 60.0),
        ).labels()
        self.fetch_bytes = counters(
            "fks_fetch_bytes", "Bytes received from remote stores, failed and cut attempts included"
        ).labels()
        self.notify_to_swap = histograms(
            "fks_notify_to_swap_seconds",
            "From a notification's arrival to the swap it caused",
            buckets=LAG_BUCKETS,
        ).labels()
        self.request_latency = histograms(
            "fks_predict_latency_seconds",
            "In-handler inference latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
        )
        self.acks = counters(
            "fks_acks", "Acks sent on fks:<instance>:acks, by outcome (SPEC §11)", ["outcome"]
        )
        self.acks_dropped = counters(
            "fks_acks_dropped", "Acks dropped (Redis unreachable, or a full queue)"
        ).labels()
        # The series of the known label values exist from the start, at 0: a panel's
        # increase() then sees the first swap of a source, ack of an outcome or notification
        # of a channel (a series that appears already at 1 shows no increase)
        for source in SWAP_SOURCES:
            self.swaps.labels(source)
        for outcome in get_args(AckOutcome):
            self.acks.labels(outcome)
        for via in ("channel", "latest"):
            self.notifications.labels(via)
        # Bound once: .labels() takes a lock and a dict lookup on every request otherwise.
        self.predict_latency = self.request_latency.labels("predict")
        self.batch_latency = self.request_latency.labels("batch")
        self.infer_latency = self.request_latency.labels("v2_infer")  # SPEC §14
        self._saved_at: float | None = None
        self.model_age.set_function(self._age)

    def for_model(self, model: str) -> Metrics:
        """The metrics of another model of this node: the same registry and families, its
        own ``model`` label (SPEC §13)."""
        return Metrics(self.registry, model=model, _families=self._families)

    def _age(self) -> float:
        return float("nan") if self._saved_at is None else time.time() - self._saved_at

    def served(self, generation: int, version: int, saved_at_unix: float | None) -> None:
        self.generation.set(generation)
        self.version.set(version)
        self._saved_at = saved_at_unix

    def timer(self) -> Callable[[], float]:
        start = time.perf_counter()
        return lambda: time.perf_counter() - start
