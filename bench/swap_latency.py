"""notify → swapped, beside its floors, measured in one run.

- floor 1: the checkpoint's own verify+load time (``prepare_checkpoint``), timed on the
  same file just before each publication, paced like the publications (loads run back to
  back are faster on this machine: warm caches, so that would flatter the floor);
- floor 2: the publisher's ``notify()`` call itself (two Redis round trips and the message);
- floor 3: ``notify()`` called in the publisher process → the message read by a plain
  redis-py subscriber in this process (no node: what delivery alone costs), paced the same;
- floor 4: a bare Redis PUBLISH → subscriber receive round trip in one process, back to back
  (the best case of the transport);
- the sum: floor 3 + floor 1, what notify → swapped costs before the node does anything
  of its own (parsing and judging the message, the hand-offs between its threads, the
  swap); the node's part is the difference;
- ours: ``notify()`` called in a separate publisher process (as a trainer is) → the
  serving node in this process has swapped (callback on swap), for the 300 KB actor and a
  4 MB one (hidden 1024x1024), ``.safetensors`` as ``fks train`` writes them, on two nodes
  in this process: the default configuration and ``STAT_PAIR_RL_JIT=true`` (their own
  instances), every publication alternating size and node. Both sides stamp
  ``time.perf_counter()``, which is CLOCK_MONOTONIC on Linux, shared by all processes.

Run: ``.venv/bin/python -m bench.swap_latency [--n 200]``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import redis

from bench._util import SwapWatch, child_process, listening, make_checkpoint, summary_ms, table
from common.checkpoint import SavedCheckpoint
from common.keys import RedisKeys
from common.policy import PolicyConfig
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from subscriber import ServingNode
from subscriber.model.loader import prepare_checkpoint
from subscriber.runtime.threads import limit_threads


def bare_round_trip(url: str, n: int) -> list[float]:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench:rt")
    pubsub.get_message(timeout=1)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        client.publish("bench:rt", str(i))
        while pubsub.get_message(timeout=1) is None:
            pass
        samples.append(time.perf_counter() - start)
    pubsub.close()
    client.close()
    return samples


def publisher_process(url: str, conn: mp.connection.Connection) -> None:
    """Child: on each (path, version, sha256) received, stamp the time and notify."""
    with CheckpointNotifier(url) as notifier:
        while (job := conn.recv()) is not None:
            path, version, sha256 = job
            start = time.perf_counter()
            notifier.notify(path, version=version, sha256=sha256)
            conn.send(start)


def delivered(
    url: str, ours: mp.connection.Connection, files: list[SavedCheckpoint], n: int
) -> list[float]:
    """notify() in the publisher process → a plain subscriber here has the message, paced
    like the publications (for an instance no node serves)."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(RedisKeys("bench-delivery").channel)
    pubsub.get_message(timeout=1)
    samples = []
    try:
        for i in range(n + 1):
            time.sleep(0.005)
            saved = files[i % len(files)]
            ours.send(("bench-delivery", str(saved.path), i + 1, saved.sha256))
            while pubsub.get_message(timeout=5) is None:
                pass
            got = time.perf_counter()
            began, _ = ours.recv()
            if i:  # the first one warms the notifier up
                samples.append(got - began)
    finally:
        pubsub.close()
        client.close()
    return samples


def timed_publisher(url: str, conn: mp.connection.Connection) -> None:
    """Child: on each (instance, path, version, sha256) received, stamp the time and notify;
    send back (start, end) of the ``notify()`` call."""
    notifiers: dict[str, CheckpointNotifier] = {}
    while (job := conn.recv()) is not None:
        instance, path, version, sha256 = job
        if instance not in notifiers:
            notifiers[instance] = CheckpointNotifier(url, instance)
            notifiers[instance].notify(path, version=version, sha256=sha256)  # warm it up
            conn.send((0.0, 0.0))
            continue
        start = time.perf_counter()
        notifiers[instance].notify(path, version=version, sha256=sha256)
        conn.send((start, time.perf_counter()))
    for notifier in notifiers.values():
        notifier.close()


SIZES = {"300 KB": PolicyConfig(), "4 MB": PolicyConfig(hidden=(1024, 1024))}


def run(n: int = 200) -> dict[str, dict[str, float]]:
    """Rows: the floors, then notify → swapped for each size, default and JIT, alternated."""
    limit_threads(1)  # as ServingNode.start() does (FKS_TORCH_THREADS=1)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"  # inside the model root, but not scanned at preload
        incoming.mkdir()
        files = {
            size: [make_checkpoint(incoming, 1, name=f"model_{size[0]}_{i}.safetensors",
                                   config=config) for i in range(3)]
            for size, config in SIZES.items()
        }  # fmt: skip
        watch = SwapWatch()
        samples: dict[str, list[float]] = {}
        version = 0
        with contextlib.ExitStack() as stack:
            nodes = {
                label: stack.enter_context(listening(_node(server.url, root, label)))
                for label in ("default", "JIT")
            }
            for node in nodes.values():
                node.holder.on_swap(watch)
            ours = stack.enter_context(child_process(timed_publisher, server.url))
            for node in nodes.values():  # the publisher's connections, warmed up
                version += 1
                watch.expect(version)
                ours.send((node.settings.instance_id, str(files["300 KB"][0].path), version,
                           files["300 KB"][0].sha256))  # fmt: skip
                ours.recv()
                watch.wait(5)
            for i in range(n):
                for size, label in itertools.product(SIZES, nodes):
                    node, saved = nodes[label], files[size][i % 3]
                    start = time.perf_counter()
                    prepare_checkpoint(saved.path, node.holder.roots, node.holder.options)
                    samples.setdefault(f"checkpoint load {size} (floor)", []).append(
                        time.perf_counter() - start
                    )
                    time.sleep(0.005)
                    version += 1
                    watch.expect(version)
                    ours.send((node.settings.instance_id, str(saved.path), version, saved.sha256))
                    if not watch.wait(5):
                        raise RuntimeError(f"version {version} was not swapped in")
                    done = time.perf_counter()
                    began, returned = ours.recv()
                    samples.setdefault(f"notify() call {size} (floor)", []).append(returned - began)
                    samples.setdefault(f"notify → swapped, {size}, {label}", []).append(
                        done - began
                    )
                    time.sleep(0.005)
            samples["notify() → message received (floor)"] = delivered(
                server.url, ours, files["300 KB"], n
            )
        floors = {k: summary_ms(v) for k, v in samples.items() if "floor" in k}
        floors["redis publish→receive, back to back (floor)"] = summary_ms(
            bare_round_trip(server.url, n)
        )
        delivery = floors["notify() → message received (floor)"]
        for size in SIZES:
            load = floors[f"checkpoint load {size} (floor)"]
            floors[f"sum: delivered + load {size} (floor)"] = {
                k: delivery[k] + load[k] for k in delivery
            }  # p50 + p50 (and so on): a floor, not a distribution
        return floors | {k: summary_ms(v) for k, v in samples.items() if "floor" not in k}


def _node(url: str, root: Path, label: str) -> ServingNode:
    jit = label == "JIT"
    settings = Settings(redis_url=url, model_dir=root, default_model_dir=root, jit=jit,
                        instance_id=label.lower(), node_id=label)  # fmt: skip
    node = ServingNode(settings)
    node.listen = True
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    results = run(args.n)
    rows = [[name, *r.values()] for name, r in results.items()]
    print(table(["ms", "p50", "p90", "p99", "mean"], rows))


if __name__ == "__main__":
    main()
