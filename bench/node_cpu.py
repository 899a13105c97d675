"""Node CPU per publication: what one notification costs the serving node, split by stage,
beside the floor of a swap (the load with every check, measured in the same node).

A node (``bench/node_cpu_node.py``, its own process, no requests) hears ``--publications``
notifications at ``--rate`` per second from a trainer's ``CheckpointNotifier`` in this
process; the node's CPU (``time.process_time()`` and each thread's own clock) is read before
and after, and over an idle stretch of the same length (pings, heartbeats), which is shown
apart and taken out of the per-publication figure. Cases: a stale notice (the served version
announced again: judged, acked, nothing loaded), and swaps of a 300 KB and a 4 MB
``sac_actor`` and of a 300 KB ``dqn`` (three files in turn, each a newer version).

Run: ``.venv/bin/python -m bench.node_cpu [--publications 200] [--rate 20]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench._util import table
from common.ack import Ack
from common.keys import RedisKeys
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier

SHA = "fks-sha256"
TARGET_STALE_US = 100.0
TARGET_SWAP_OVER_FLOOR_MS = 0.5
STAGES = ("receive", "judge", "fetch/load", "swap", "ack + registry + :latest", "memory trim",
          "other")  # fmt: skip


class Node:
    """The node process, its commands and its acks."""

    def __init__(self, url: str, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.node_cpu_node", url, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the node did not start")
        self.acks: list[Ack] = []
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(RedisKeys("default").acks)
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            while True:
                message = self._pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self.acks.append(Ack.model_validate_json(message["data"]))
        except (redis.ConnectionError, ValueError):  # Redis stopped at the end of the run
            return

    def ask(self, *words: object) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        _, _, answer = self.proc.stdout.readline().partition(" ")
        return json.loads(answer)

    def wait_acks(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(self.acks) < count:
            raise RuntimeError(f"{len(self.acks)} acks of {count}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        self._pubsub.close()
        self._client.close()


@contextmanager
def node(url: str, root: Path) -> Iterator[Node]:
    n = Node(url, root)
    try:
        yield n
    finally:
        n.close()


@dataclass
class Reading:
    """CPU seconds of the node over a stretch: the process, by thread, by stage."""

    process: float
    threads: dict[str, float]
    stages: dict[str, float]

    @classmethod
    def between(cls, a: dict[str, Any], b: dict[str, Any]) -> Reading:
        threads = {k: v - a["threads"].get(k, 0.0) for k, v in b["threads"].items()}
        stages = {k: v - a["stages"].get(k, 0.0) for k, v in b["stages"].items()}
        return cls(b["process"] - a["process"], threads, stages)

    def split(self) -> dict[str, float]:
        """The stages of the issue: receive, judge, fetch/load, swap, ack + registry +
        :latest, and what is left (heartbeats, the main thread, the GC...)."""
        t, s = self.threads, self.stages
        listener = t.get("fks-listener", 0.0)
        judged_on_listener = s.get("judge (listener)", 0.0)
        swap = s.get("swap", 0.0)
        judge_on_applier = s.get("judge (applier)", 0.0) - swap
        latest = s.get(":latest", 0.0)
        applier_rest = t.get("fks-applier", 0.0) - judge_on_applier - swap - latest
        out = {
            "receive": listener - judged_on_listener,
            "judge": judged_on_listener + judge_on_applier + applier_rest,
            # the lane, and the sha256 thread beside its decoding (files over 1 MiB)
            "fetch/load": sum(v for k, v in t.items() if k == "fks-load" or k.startswith(SHA)),
            "swap": swap,
            "ack + registry + :latest": t.get("fks-acker", 0.0) + latest,
            # once a second after swaps, on a timer thread of its own (subscriber/runtime/memory.py)
            "memory trim": s.get("trim", 0.0),
        }
        out["other"] = self.process - sum(out.values())
        return out


def publish(
    notifier: CheckpointNotifier,
    n: Node,
    files: list[Any],
    first_version: int,
    count: int,
    rate: float,
    *,
    stale: bool,
) -> None:
    """``count`` notifications paced at ``rate`` per second, then until every one is acked."""
    acked = len(n.acks)
    start = time.perf_counter()
    for i in range(count):
        saved = files[i % len(files)]
        version = first_version if stale else first_version + i
        result = notifier.notify(saved.path, version=version, sha256=saved.sha256)
        if not result:
            raise RuntimeError(f"not published: {result}")
        time.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
    n.wait_acks(acked + count)


def run(publications: int = 200, rate: float = 20.0) -> dict[str, dict[str, float]]:
    """Per case: CPU µs per publication (gross, idle, net), its split and the floor."""
    from bench._util import make_checkpoint
    from common.architectures.dqn import DQN
    from common.checkpoint import save_checkpoint
    from common.notification import CheckpointNotification
    from common.policy import PolicyConfig

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        small = [make_checkpoint(incoming, 1, name=f"s{i}.safetensors") for i in range(3)]
        big_config = PolicyConfig(hidden=(1024, 1024))
        big = [
            make_checkpoint(incoming, 1, name=f"b{i}.safetensors", config=big_config)
            for i in range(3)
        ]
        dqn = [save_checkpoint(incoming / f"d{i}.safetensors", DQN()) for i in range(3)]
        cases: list[tuple[str, list[Any], bool]] = [
            ("stale notice (served version again)", small[:1], True),
            ("swap, sac_actor 300 KB", small, False),
            ("swap, sac_actor 4 MB", big, False),
            ("swap, dqn 300 KB", dqn, False),
        ]
        version = 1
        with node(server.url, root) as n, CheckpointNotifier(server.url) as notifier:
            publish(notifier, n, small[:1], version, 1, rate, stale=False)  # served: v1
            duration = publications / rate
            before = n.ask("cpu")
            time.sleep(duration)
            idle = Reading.between(before, n.ask("cpu"))
            receive_floor = floor_of_hearing(server.url, n, small[0], publications, rate, idle)
            notice = root / "notice.json"
            notice.write_text(
                CheckpointNotification(model_path=str(small[0].path), version=1).to_json()
            )
            runs_cold = n.ask("cold", notice, min(publications, 100), 1 / rate)
            for name, files, stale in cases:
                if stale:
                    first = version
                else:
                    first = version + 1
                    # a first swap of this kind outside the measure (first-time costs)
                    publish(notifier, n, files, first, 1, rate, stale=False)
                    first += 1
                before = n.ask("cpu")
                publish(notifier, n, files, first, publications, rate, stale=stale)
                reading = Reading.between(before, n.ask("cpu"))
                if not stale:
                    version = first + publications - 1
                outcomes = {a.outcome for a in n.acks[-publications:]}
                expected = {"stale"} if stale else {"applied"}
                if outcomes != expected:
                    raise RuntimeError(f"{name}: acks {outcomes}, expected {expected}")
                floors = n.ask("floor", files[0].path, min(publications, 100), 1 / rate)
                measured = min(publications, 100)
                one_thread = (
                    0.0
                    if stale
                    else floor_of_swapping(server.url, n, files, measured, rate, idle) / measured
                )
                per = 1e6 / publications
                idle_split = idle.split()
                split = {k: (v - idle_split[k]) * per for k, v in reading.split().items()}
                idle_share = idle.process * per
                results[name] = {
                    "receive floor": receive_floor * per,
                    "json.loads paced": runs_cold["paced"] * 1e6,
                    "json.loads back to back": runs_cold["back to back"] * 1e6,
                    "json.loads paced, spinning": runs_cold["paced, spinning"] * 1e6,
                    "gross": reading.process * per,
                    "idle": idle_share,
                    "net": reading.process * per - idle_share,
                    "floor": statistics.median(floors) * 1e6 if not stale else 0.0,
                    "one-thread floor": one_thread * 1e6,
                    **{f"split {k}": v for k, v in split.items()},
                    **{f"idle {k}": v * per for k, v in idle_split.items()},
                }
    return results


def floor_of_hearing(
    url: str, n: Node, saved: Any, count: int, rate: float, idle: Reading
) -> float:
    """CPU seconds that hearing ``count`` notices cost the node's bare subscriber thread
    (read, ``json.loads``, one PUBLISH back; ``bench/node_cpu_node.py``), paced as the
    notices are, its idle share (one wakeup a second) taken out."""
    from bench.node_cpu_node import FLOOR_CHANNEL

    return _floor(url, n, FLOOR_CHANNEL, "bench-floor", [saved], count, rate, idle,
                  version=lambda _: 1)  # fmt: skip


def floor_of_swapping(
    url: str, n: Node, files: list[Any], count: int, rate: float, idle: Reading
) -> float:
    """CPU seconds that ``count`` swaps cost the node's bare swapper thread (hear, load with
    every check, ack: ``bench/node_cpu_node.py``) and the sha256 thread beside its loads,
    paced as the notices are, its idle share taken out: the floor of a swap in any design."""
    from bench.node_cpu_node import SWAP_FLOOR_CHANNEL

    return _floor(url, n, SWAP_FLOOR_CHANNEL, "bench-swap-floor", files, count, rate, idle,
                  version=lambda i: i + 1, helpers=SHA, settle=0.5)  # fmt: skip


def _floor(
    url: str,
    n: Node,
    channel: str,
    thread: str,
    files: list[Any],
    count: int,
    rate: float,
    idle: Reading,
    *,
    version: Callable[[int], int],
    helpers: str | None = None,
    settle: float = 0.2,
) -> float:
    """CPU seconds of the node's ``thread`` (and its ``helpers`` threads) over ``count``
    notices of ``files`` in turn published on ``channel``, paced at ``rate``, its idle share
    taken out."""
    from common.notification import CheckpointNotification

    client = redis.Redis.from_url(url)
    try:
        before = n.ask("cpu")
        start = time.perf_counter()
        for i in range(count):
            saved = files[i % len(files)]
            raw = CheckpointNotification(
                model_path=str(saved.path), version=version(i), sha256=saved.sha256
            )
            client.publish(channel, raw.to_json())
            time.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
        time.sleep(settle)
        reading = Reading.between(before, n.ask("cpu"))
    finally:
        client.close()
    spent = sum(
        v
        for k, v in reading.threads.items()
        if k == thread or (helpers is not None and k.startswith(helpers))
    )
    return spent - idle.threads.get(thread, 0.0) * (time.perf_counter() - start) / (count / rate)


def verdicts(results: dict[str, dict[str, float]]) -> list[tuple[bool, str]]:
    out = []
    for name, r in results.items():
        if name.startswith("stale"):
            out.append(
                (
                    r["net"] <= TARGET_STALE_US,
                    f"a stale notice costs the node {r['net']:.0f} µs of CPU ≤ "
                    f"{TARGET_STALE_US:.0f} µs (floor measured beside it: hearing a notice at "
                    f"all, read + json.loads + one PUBLISH back on a bare subscriber thread "
                    f"of the same process, paced alike: {r['receive floor']:.0f} µs; idle cost "
                    f"taken out: {r['idle']:.0f} µs per 1/rate s)",
                )
            )
        else:
            over = (r["net"] - r["floor"]) / 1e3
            bare = (r["one-thread floor"] - r["floor"]) / 1e3
            out.append(
                (
                    over <= TARGET_SWAP_OVER_FLOOR_MS,
                    f"{name}: {r['net'] / 1e3:.2f} ms of node CPU = load floor "
                    f"{r['floor'] / 1e3:.2f} ms (measured in the node, same run) + "
                    f"{over:.2f} ms ≤ floor + {TARGET_SWAP_OVER_FLOOR_MS} ms (floor of any "
                    f"design measured beside it, hear + load + ack on one bare thread: "
                    f"{r['one-thread floor'] / 1e3:.2f} ms = load floor + {bare:.2f} ms)",
                )
            )
    return out


HEADERS = ["µs of node CPU per publication", "net", "floor: hear + ack", "floor: load",
           "floor: hear + load + ack, one thread", *STAGES, "idle (taken out)"]  # fmt: skip


def rows(results: dict[str, dict[str, float]]) -> list[list[object]]:
    return [
        [
            name,
            r["net"],
            r["receive floor"],
            r["floor"] or "",
            r["one-thread floor"] or "",
            *(r[f"split {s}"] for s in STAGES),
            r["idle"],
        ]
        for name, r in results.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publications", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    results = run(args.publications, args.rate)
    print(table(HEADERS, rows(results)))
    idle = next(iter(results.values()))
    print(
        "idle, µs per 1/rate s:",
        ", ".join(f"{s} {idle[f'idle {s}']:.0f}" for s in STAGES),
    )
    for ok, text in verdicts(results):
        print(("met: " if ok else "NOT MET: ") + text)


if __name__ == "__main__":
    main()
