"""Freshness cost on the request path, ns per request: Redis mode vs mtime fallback vs none.

- none: ``holder.current()``, the bare snapshot read;
- Redis mode: ``node.model_for_request()`` with the listener connected (two attribute reads);
- mtime fallback: ``node.model_for_request()`` with the listener down (one ``os.stat``);
- one bare ``os.stat`` of the checkpoint directory, for reference.

Run: ``.venv/bin/python -m bench.freshness_cost``
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._util import listening, make_checkpoint, table
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from subscriber import ServingNode


def ns_per_call(fn: Callable[[], object], n: int = 200_000, repeats: int = 5) -> float:
    """Best of ``repeats`` runs of ``n`` calls (the least disturbed by the noisy machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def run(n: int = 200_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        make_checkpoint(root, 1)
        past = time.time_ns() - 10**9
        os.utime(root, ns=(past, past))
        node = ServingNode(Settings(redis_url=server.url, model_dir=root, default_model_dir=root))
        with listening(node) as live:
            down = ServingNode(
                Settings(model_dir=root, default_model_dir=root), listen=False
            ).start()
            down.model_for_request()
            return {
                "no check (holder.current)": ns_per_call(live.holder.current, n),
                "Redis mode (ours)": ns_per_call(live.model_for_request, n),
                "mtime fallback (ours, Redis down)": ns_per_call(down.model_for_request, n // 10),
                "one os.stat (reference)": ns_per_call(lambda: os.stat(root), n // 10),
            }


def main() -> None:
    results = run()
    stat = results["one os.stat (reference)"]
    rows = [[name, ns, stat / ns] for name, ns in results.items()]
    print(table(["request path", "ns/request", "x cheaper than os.stat"], rows))


if __name__ == "__main__":
    main()
