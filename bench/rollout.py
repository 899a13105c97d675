"""Rollouts: `notify_checkpoint(..., wait_for="all")` round trip beside the plain notify→swap.

N serving processes (``bench/fanout_node.py``: real ServingNodes that register and ack). The
publications alternate, in one run: a plain one (notify → the last node swapped, stamped by
the nodes) and one that waits for every node's ack (notify called → it returned with all
acks in: subscribing to the acks, reading the registry, publishing, every node's judgment
and ack). The difference is what knowing costs the trainer.

Run: ``.venv/bin/python -m bench.rollout [--nodes 1 8 32] [--publications 30]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._util import make_checkpoint, node_fleet, summary_ms, table
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier

__all__ = ["run"]


def run(nodes: int, publications: int = 30) -> dict[str, dict[str, float]]:
    """``{"plain": ms summary of notify → last swap, "waited": ms summary of the
    wait_for="all" round trip, "waited_swap": its notify → last swap}``."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        files = [make_checkpoint(incoming, 1, name=f"model_{i}.pt") for i in range(3)]
        plain: list[float] = []
        waited: list[float] = []
        waited_swap: list[float] = []
        with (
            node_fleet(server.url, root, nodes) as fleet,
            CheckpointNotifier(server.url) as notifier,
        ):
            while len(notifier.nodes()) < nodes:  # every node registered
                time.sleep(0.05)
            for version in range(1, 2 * publications + 1):
                saved = files[version % 3]
                wait = version % 2 == 0
                start = time.perf_counter()
                result = notifier.notify(
                    saved.path, version=version, sha256=saved.sha256,
                    wait_for="all" if wait else None, timeout=30,
                )  # fmt: skip
                returned = time.perf_counter()
                got = fleet.wait_swapped(version, every=0.0005)
                if len(got) == nodes:
                    (waited_swap if wait else plain).append(max(got) - start)
                if wait and result.acks is not None and result.acks.ok:
                    waited.append(returned - start)
                time.sleep(0.05)
    return {
        "plain": summary_ms(plain) | {"n": float(len(plain))},
        "waited": summary_ms(waited) | {"n": float(len(waited))},
        "waited_swap": summary_ms(waited_swap) | {"n": float(len(waited_swap))},
    }


HEADERS = [
    "nodes",
    "plain notify→last swap p50 ms",
    "p99 ms",
    'wait_for="all" round trip p50 ms',
    "p99 ms",
    "its notify→last swap p50 ms",
    "complete (plain/waited)",
]


def row(nodes: int, r: dict[str, dict[str, float]]) -> list[object]:
    p, w, s = r["plain"], r["waited"], r["waited_swap"]
    return [nodes, p["p50"], p["p99"], w["p50"], w["p99"], s["p50"], f"{p['n']:.0f}/{w['n']:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--publications", type=int, default=30, help="of each kind")
    args = parser.parse_args()
    rows = []
    for n in args.nodes:
        rows.append(row(n, run(n, args.publications)))
        print(table(HEADERS, rows), flush=True)


if __name__ == "__main__":
    main()
