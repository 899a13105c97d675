"""The serving nodes of one process: one :class:`~subscriber.node.ServingNode` per instance.

SPEC §13: a node may serve several instances (``FKS_INSTANCE_IDS=a,b,c``). Each is a model
of its own, with everything a one-instance node has (its channel and ``:latest``, holder,
history, rollback, fallback tiers, acks and registry entry): a ``ServingNode`` each, built
from the settings :meth:`~common.settings.Settings.for_instance` gives it (``{instance}`` in
its model roots). What they share:

- **one Redis connection for every channel**: the first instance's listener reads for all
  (``CheckpointSubscriber.join``) and hands each message to its instance's listener, which
  parses, judges and queues it; loads and fetches run on each instance's own applier and load
  lane, so one instance's bad message, slow fetch or hung load never delays another's.
  (Sharded pub/sub in a Redis Cluster puts each channel in a slot of its own, on whichever
  server owns it: there each instance listens on a connection of its own.)
  One connection has one limit: Redis closes a subscriber whose unread messages pass its
  ``client-output-buffer-limit pubsub`` (32 MB by default), so a flood of hundreds of
  megabytes on one channel closes every instance's subscription at once. Each instance then
  catches up on its ``:latest`` within a second, as after any reconnect, but a targeted
  message (``nodes=[…]``) sent meanwhile is lost with it. ``FKS_SUBSCRIPTIONS=per-instance``
  gives each instance its own connection, so such a flood closes only its own.
- one metrics registry, every series of a model labelled ``model="<instance>"``.

A one-instance node is a group of one: exactly today's node. ``/sac/*`` serves the first
instance; the Open Inference Protocol (``/v2``) serves every one by its id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from common.redis_io.url import parse_redis_url
from common.settings import Settings
from subscriber.node import ServingNode
from subscriber.pipeline.listener import ListenerTiming
from subscriber.runtime.metrics import Metrics

__all__ = ["NodeGroup"]

log = logging.getLogger(__name__)


class NodeGroup:
    """The nodes of ``settings.instances``, in their order; ``start()`` / ``stop()``."""

    def __init__(
        self, settings: Settings | None = None, *, timing: ListenerTiming | None = None
    ) -> None:
        self.settings = s = settings or Settings()
        ids = s.instances
        first = Metrics(model=ids[0])
        self.nodes: dict[str, ServingNode] = {}
        for instance_id in ids:
            metrics = first if not self.nodes else first.for_model(instance_id)
            self.nodes[instance_id] = ServingNode(
                s, metrics=metrics, timing=timing, instance=instance_id
            )
        if len(self.nodes) > 1:
            for instance_id, node in self.nodes.items():
                node.holder.name_in_logs(instance_id)
        # sharded channels of a cluster live on the servers that own their slots
        sharded_cluster = s.sharded_pubsub and parse_redis_url(s.redis_url).kind == "cluster"
        if s.subscriptions == "shared" and not sharded_cluster:
            reader = self.first.listener
            for node in list(self.nodes.values())[1:]:
                node.listener.join(reader)

    @property
    def first(self) -> ServingNode:
        """The first instance's node: the one ``/sac/*`` serves."""
        return next(iter(self.nodes.values()))

    @property
    def metrics(self) -> Metrics:
        return self.first.metrics

    def __iter__(self) -> Iterator[ServingNode]:
        return iter(self.nodes.values())

    def start(self) -> NodeGroup:
        """Start every node, each step for all of them before the next (so their catch-ups
        and first loads run side by side); never fails, as a node's start never does."""
        nodes = list(self)
        for node in nodes:
            node.begin()
        for node in nodes:
            node.listen_now()
        for node in nodes:
            node.caught_up()
        tickets = [node.look_at_disk() for node in nodes]
        for node, ticket in zip(nodes, tickets, strict=True):
            node.settle(ticket)
        if len(nodes) > 1:
            log.info("serving %d instances: %s", len(nodes), ", ".join(self.nodes))
        return self

    def stop(self) -> None:
        for node in self:
            node.stop()
