"""Hear and decide: where a notification goes once it reaches a node.

``listener`` (one background thread, over ``redis_link``) receives each message, drops what
``seen`` already judged, and hands candidates to the ``applier``, the only thread that loads;
``decider`` picks at most one swap from a batch (by ``model.plan``'s rule); the ``recorder``
writes the fleet's decisions to Redis (``:latest``, ``:version``), the ``acker`` answers on
the acks channel, the ``registry`` heartbeats what the node serves, and ``marks`` keeps what
the node saw Redis hold of the order (``:epoch``, ``:version``) and finds Redis losing it under
a subscribed node (from the registry's reads and the listener's catch-up). With Redis away, the
``fallback`` checks the disk once per request and wakes the applier.

May import: ``model``, ``fetching``, ``runtime``, ``common``. Never HTTP, never ``process``.
"""
