"""Fan-out: one publish → N serving processes; time until the last of them has swapped.

Run: ``.venv/bin/python -m bench.fanout [--nodes 1 8 32] [--publications 30]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path

from bench._util import make_checkpoint, node_fleet, summary_ms, table
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier


def run(nodes: int, publications: int = 30, *, jit: bool = False) -> dict[str, float]:
    """One publish → ``nodes`` processes (``STAT_PAIR_RL_JIT=true`` with ``jit``)."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        files = [make_checkpoint(incoming, 1, name=f"model_{i}.safetensors") for i in range(3)]
        lags = []
        with (
            node_fleet(server.url, root, nodes, "jit" if jit else "default") as fleet,
            CheckpointNotifier(server.url) as notifier,
        ):
            for version in range(1, publications + 2):
                saved = files[version % 3]
                start = time.perf_counter()
                notifier.notify(saved.path, version=version, sha256=saved.sha256)
                got = fleet.wait_swapped(version)
                if len(got) == nodes:
                    lags.append(max(got) - start)
                elif version == 1:
                    lags.append(math.nan)
                time.sleep(0.05)
        cpu_at = fleet.cpu_at
    # The first publication is every process's first load (its first-time costs: ~25 ms
    # for one process, ~100 ms for 8 at once, on 2 cores): reported apart, as "first".
    first, lags = lags[0], lags[1:]
    result = summary_ms(lags)
    result["first"] = first * 1e3
    result["complete"] = float(len(lags))
    # CPU a node spends per publication (receive, verify, load, swap; idle pings included):
    # the median over nodes and publications of the CPU time between consecutive swaps.
    per_publication = [b - a for times in cpu_at.values() for a, b in itertools.pairwise(times)]
    result["cpu_ms"] = statistics.median(per_publication) * 1e3 if per_publication else math.nan
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--publications", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for n in args.nodes:
        r = run(n, args.publications)
        rows.append([n, r["p50"], r["p99"], r["mean"], r["first"], r["cpu_ms"], int(r["complete"])])
    print(
        table(
            [
                "nodes",
                "last swapped p50 ms",
                "p99 ms",
                "mean ms",
                "first publication ms",
                "CPU ms per node",
                "publications",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
