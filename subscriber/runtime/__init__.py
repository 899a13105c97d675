"""The node's machinery, below every stage: threads, memory, metrics.

``lane`` runs one checkpoint load at a time, each with a time budget; ``background`` is the
start/stop of the node's looping threads (applier, listener, heartbeat); ``threads`` sets how many
threads torch and BLAS use; ``memory`` and ``heap`` keep RSS and GC pauses small after swaps;
``metrics`` is the node's Prometheus registry; ``traffic`` counts requests and errors since the
last swap.

May import: ``common`` only.
"""
