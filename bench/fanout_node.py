"""A serving node for the fan-out benchmark (argv: URL ROOT NAME [jit]): prints ``ready``
once subscribed, then one ``swap VERSION PERF_COUNTER CPU_SECONDS`` line per swap: the time
(CLOCK_MONOTONIC, shared by all processes) and this process's CPU time so far (all its
threads)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench._util import listening
from common.settings import Settings
from subscriber import ServingNode
from subscriber.model.snapshot import ServedModel
from subscriber.runtime.heap import freeze_startup_heap


def main() -> None:
    url, root, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    jit = len(sys.argv) > 4 and sys.argv[4] == "jit"
    node = ServingNode(
        Settings(redis_url=url, model_dir=root, default_model_dir=root, node_id=name, jit=jit)
    )

    def on_swap(model: ServedModel) -> None:
        print(
            f"swap {model.version} {time.perf_counter():.6f} {time.process_time():.6f}", flush=True
        )

    node.holder.on_swap(on_swap)
    if node.settings.gc_freeze:  # as a server's startup does (subscriber/web/app.py)
        node.metrics.gc_frozen.set(freeze_startup_heap())
    with listening(node):
        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
