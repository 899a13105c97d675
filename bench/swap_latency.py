"""notify → swapped, beside its two floors, measured in one run.

- floor 1: the checkpoint's own verify+load+build time (``prepare_checkpoint``), timed on the
  same file just before each publication, paced like the publications (loads run back to
  back are ~1.5 ms faster on this machine: warm caches, so that would flatter the floor);
- floor 2: a bare Redis PUBLISH → subscriber receive round trip (redis-py, same server);
- ours: ``notify()`` called in a separate publisher process (as a trainer is) → the
  serving node in this process has swapped (callback on swap). Both sides stamp
  ``time.perf_counter()``, which is CLOCK_MONOTONIC on Linux, shared by all processes.

Run: ``.venv/bin/python -m bench.swap_latency [--n 200]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path

import redis
import torch

from bench._util import make_checkpoint, summary_ms, table
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from subscriber import ServingNode
from subscriber.loader import prepare_checkpoint
from subscriber.snapshot import ServedModel


def bare_round_trip(url: str, n: int) -> list[float]:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
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


def run(n: int = 200) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)  # as ServingNode.start() does (FKS_TORCH_THREADS=1)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"  # inside the model root, but not scanned at preload
        incoming.mkdir()
        files = [make_checkpoint(incoming, v) for v in range(1, n + 1)]
        settings = Settings(redis_url=server.url, model_dir=root, default_model_dir=root)
        node = ServingNode(settings)
        loads = []
        swapped = threading.Event()
        target = {"version": 0}

        def on_swap(model: ServedModel) -> None:
            if model.version == target["version"]:
                swapped.set()

        node.holder.on_swap(on_swap)
        node.listen = True
        node.start()
        while not node.listener.connected:
            time.sleep(0.01)
        lags = []
        ours, theirs = mp.Pipe()
        child = mp.get_context("spawn").Process(target=publisher_process, args=(server.url, theirs))
        child.start()
        try:
            for saved in files:
                start = time.perf_counter()
                prepare_checkpoint(saved.path, node.holder.roots, node.holder.options)
                loads.append(time.perf_counter() - start)
                time.sleep(0.005)
                swapped.clear()
                target["version"] = saved.version
                ours.send((str(saved.path), saved.version, saved.sha256))
                if not swapped.wait(5):
                    raise RuntimeError(f"version {saved.version} was not swapped in")
                done = time.perf_counter()
                lags.append(done - ours.recv())
                time.sleep(0.005)
        finally:
            ours.send(None)
            child.join(10)
        node.stop()
        return {
            "checkpoint load (floor)": summary_ms(loads),
            "redis publish→receive (floor)": summary_ms(bare_round_trip(server.url, n)),
            "notify → swapped (ours)": summary_ms(lags),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    results = run(args.n)
    rows = [[name, *r.values()] for name, r in results.items()]
    print(table(["ms", "p50", "p90", "p99", "mean"], rows))
    ours, load = results["notify → swapped (ours)"], results["checkpoint load (floor)"]
    print(
        f"\np99 budget: load p99 + 3 ms = {load['p99'] + 3:.3f} ms; ours p99 = {ours['p99']:.3f} ms"
    )


if __name__ == "__main__":
    main()
