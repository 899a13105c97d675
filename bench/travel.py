"""notify → swapped when the checkpoint travels (SPEC §9): a shared local file, an upload to
S3, a Redis blob, for a 300 KB and a 4 MB checkpoint, in one run.

One serving node in this process (in-process ``ServingNode``, real redis-server), one
publisher in a separate process (as a trainer is), a real S3-protocol server
(``moto_server``, a Python process on the same 2 cores: a slow S3, but one whose every
byte crosses a socket). The rounds of the six cases are interleaved, so they share the
machine's conditions. Both sides stamp ``time.perf_counter()`` (CLOCK_MONOTONIC).

- ``notify`` : the publisher's call (hash, upload to S3 or SET of the blob, PUBLISH);
- ``notify → swapped`` : from that call's start to the node's swap (its fetch into the
  cache, sha256 check, load, probe included).

Run: ``.venv/bin/python -m bench.travel [--n 20]`` (not part of ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from bench._util import SwapWatch, child_process, listening, make_checkpoint, pct, table
from common.checkpoint import SavedCheckpoint
from common.policy import PolicyConfig
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from fks.s3_server import MotoServer
from publisher import CheckpointNotifier
from subscriber import ServingNode

SIZES = {"300 KB": PolicyConfig(), "4 MB": PolicyConfig(hidden=(1024, 1024))}
TRANSPORTS = ("local file", "S3 (moto)", "Redis blob")
PREFIX = "s3://bench/ckpt/"


def publisher_process(url: str, env: dict[str, str], conn: Connection) -> None:
    """Child: for each (path, version, transport), stamp, notify, stamp again."""
    os.environ.update(env)
    with CheckpointNotifier(url) as notifier:
        while (job := conn.recv()) is not None:
            path, version, transport = job
            start = time.perf_counter()
            if transport == "S3 (moto)":
                result = notifier.notify(path, version=version, upload_to=PREFIX)
            elif transport == "Redis blob":
                result = notifier.notify(path, version=version, transport="redis")
            else:
                result = notifier.notify(path, version=version)
            conn.send((start, time.perf_counter(), result.sent, result.reason))


def run(n: int = 20) -> list[list[object]]:
    torch.set_num_threads(1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(persistent=False) as server,
        MotoServer() as s3,
    ):
        os.environ.update(s3.env)
        s3.create_bucket("bench")
        root = Path(tmp)
        shared, trainer = root / "shared", root / "trainer"
        shared.mkdir()
        trainer.mkdir()
        settings = Settings(
            redis_url=server.url,
            model_dir=shared / "none",
            default_model_dir=shared,
            cache_dir=root / "node-cache",
            model_urls=f"{PREFIX},redis-blob:",  # blobs are opt-in
        )
        node = ServingNode(settings)
        watch = SwapWatch()
        node.holder.on_swap(watch)
        lags: dict[tuple[str, str], list[float]] = {}
        calls: dict[tuple[str, str], list[float]] = {}
        version = 0
        with listening(node), child_process(publisher_process, server.url, s3.env) as ours:
            for _ in range(n):
                for size, config in SIZES.items():
                    for transport in TRANSPORTS:
                        version += 1
                        where = shared if transport == "local file" else trainer
                        saved: SavedCheckpoint = make_checkpoint(where, version, config=config)
                        watch.expect(version)
                        ours.send((str(saved.path), version, transport))
                        start, returned, sent, reason = ours.recv()
                        if not sent:
                            raise RuntimeError(f"{transport}: not sent: {reason}")
                        if not watch.wait(60):
                            raise RuntimeError(f"{transport} {size}: version {version} not swapped")
                        key = (size, transport)
                        lags.setdefault(key, []).append(watch.stamps[version] - start)
                        calls.setdefault(key, []).append(returned - start)
                        time.sleep(0.02)
        rows: list[list[object]] = []
        for size in SIZES:
            for transport in TRANSPORTS:
                lag = [v * 1e3 for v in lags[(size, transport)]]
                call = [v * 1e3 for v in calls[(size, transport)]]
                rows.append([size, transport, pct(call, 50), pct(lag, 50), pct(lag, 90), max(lag)])
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="rounds of each of the six cases")
    args = parser.parse_args()
    rows = run(args.n)
    headers = ["checkpoint", "transport", "notify p50 ms", "→ swapped p50 ms", "p90 ms", "max ms"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
