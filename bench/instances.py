"""Several models per node (SPEC §13, issue 27): one ``fks serve`` serving 1, 4 and 16 models.

For each N, a real ``fks serve`` (one uvicorn worker) on a real redis-server serves N
instances ``m0``…, each its own 300 KB default actor in its own root
(``STAT_PAIR_RL_DIR=<tmp>/models/{instance}``), and is ready once ``/v2/health/ready``
answers 200, every channel has its subscriber and every instance its registry entry. Each
instance is then swapped once (first-load costs out of the figures). Measured:

- RSS: the server process' ``VmRSS`` (``/proc/<pid>/status``) once every model is served
  (ready) and at the end, after every swap below; per extra model: (RSS(N) − RSS(1)) ÷ (N − 1),
  both taken at the end. ``Threads`` from the same file, at the end.
- notify → swapped on ``m0``: this process stamps ``time.perf_counter()`` just before its
  ``CheckpointNotifier.notify()`` (a notifier kept, as a trainer keeps one) and again when the
  node's ack for that version (``"outcome": "applied"``, SPEC §11) arrives on ``fks:m0:acks``,
  which it subscribed to beforehand. The node acks right after the swap (its acker thread,
  one round trip that also rewrites its registry entry), so this is the swap plus that ack's
  trip: an upper bound of notify → swapped, closer than the node's histogram buckets. The
  ack's own ``ms`` (the message's arrival in the node → the swap judged) is shown too: the
  node's part. One publication every 100 ms, each after the previous one's ack.
- the same with the others busy: a spawned publisher process (a trainer of its own) announces
  new checkpoints (three pre-written files per instance, alternating, their sha256 given) to
  each of the N − 1 other instances at 20/s each, spread evenly over time; its achieved rate
  is reported (it never bursts to catch up: more than 250 ms behind, it drops the backlog),
  and so are the others' swaps/s that the node counted (``fks_swaps_total`` on ``/metrics``:
  a node that falls behind coalesces, so it may swap fewer than were announced), and the
  server process' CPU over those windows (``/proc/<pid>/stat``, all its threads; 100 % is
  one core).

The two phases alternate in rounds (idle, busy, idle, busy…) so that a machine whose load
drifts over the run affects both alike. N = 1 has no others: its busy columns are empty.

Run: ``.venv/bin/python -m bench.instances [--quick]`` (quick: N = 1 and 4, 8 samples)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import redis

from bench._util import child_process, make_checkpoint, stat_cpu, summary_ms, table
from common.keys import RedisKeys
from fks.redis_server import EmbeddedRedis, free_port
from fks.spawn import spawn, wait_started
from publisher import CheckpointNotifier

__all__ = ["HEADERS", "notes", "run"]

MODELS = (1, 4, 16)
QUICK_MODELS = (1, 4)
RATE = 20.0  # each other instance's publications per second
PACE = 0.1  # seconds between m0's publications
FILES = 3  # pre-written checkpoints per instance, alternated
MiB = 1024 * 1024

HEADERS = [
    "models",
    "RSS MiB ready",
    "RSS MiB after swaps",
    "RSS per extra model MiB",
    "threads",
    "notify→swapped p50 ms (others idle)",
    "p99 ms",
    "in the node p50 ms",
    "notify→swapped p50 ms (others at 20/s)",
    "p99 ms",
    "in the node p50 ms",
    "node CPU % (others at 20/s)",
    "others' publications/s asked",
    "achieved",
    "others' swaps/s (node)",
]

Files = dict[str, list[tuple[str, str]]]  # instance → [(path, sha256)]


@dataclass
class Measured:
    """One N's figures (seconds; bytes)."""

    models: int
    rss_ready: int = 0
    rss_end: int = 0
    threads: int = 0
    idle: list[float] = field(default_factory=list)
    idle_node: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    busy_node: list[float] = field(default_factory=list)
    published: int = 0
    published_s: float = 0.0
    swapped: float = 0.0
    swapped_s: float = 0.0
    cpu: float = 0.0  # the server's CPU seconds over the busy windows (swapped_s long)


def proc_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (``VmRSS``: ``"123456 kB"``, ``Threads``: …)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def rss_threads(pid: int) -> tuple[int, int]:
    status = proc_status(pid)
    return int(status["VmRSS"].split()[0]) * 1024, int(status["Threads"])


@contextlib.contextmanager
def fks_serve(tmp: Path, redis_url: str, ids: list[str]) -> Iterator[tuple[str, int]]:
    """``python -m fks serve`` (one worker) serving ``ids``; yields (its URL, its pid) once
    ``/v2/health/ready`` answers 200 and each instance's channel has its subscriber."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ".", "REDIS_URL": redis_url,
           "FKS_INSTANCE_IDS": ",".join(ids),
           "STAT_PAIR_RL_DIR": str(tmp / "models" / "{instance}"),
           "FKS_DEFAULT_DIR": str(tmp / "default" / "{instance}"),
           "FKS_CACHE_DIR": str(tmp / "cache")}  # fmt: skip
    command = [sys.executable, "-m", "fks", "serve", "--port", str(port), "--log-level",
               "warning"]  # fmt: skip
    log_path = tmp / f"serve-{port}.log"
    url = f"http://127.0.0.1:{port}"
    proc = spawn(command, log_path, env=env)
    try:
        client = redis.Redis.from_url(redis_url)
        try:  # 16 models on 2 busy cores
            wait_started(proc, lambda: _ready(url, client, ids), 180, "fks serve did not get ready",
                         exited=lambda code: f"fks serve exited ({code}): "
                         f"{log_path.read_text()[-2000:]}",
                         retry_on=(httpx.HTTPError,), every=0.1)  # fmt: skip
        finally:
            client.close()
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _ready(url: str, client: redis.Redis, ids: list[str]) -> bool:
    """``/v2/health/ready`` answers 200, each instance's channel has its subscriber and each
    instance its registry entry."""
    if httpx.get(url + "/v2/health/ready", timeout=1).status_code != 200:
        return False
    channels = [RedisKeys(i).channel for i in ids]
    counts = dict(client.pubsub_numsub(*channels))
    registered = all(client.hlen(RedisKeys(i).nodes) for i in ids)
    return registered and all(counts.get(c.encode(), 0) > 0 for c in channels)


def _acks(redis_url: str, instance: str) -> redis.client.PubSub:
    """A subscription to ``instance``'s acks, confirmed (nothing sent after it is missed)."""
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(RedisKeys(instance).acks)
    while pubsub.get_message(timeout=1) is None:
        pass
    pubsub.ignore_subscribe_messages = True
    return pubsub


def _await_ack(pubsub: redis.client.PubSub, version: int, timeout: float = 30.0) -> float:
    """Return once the ack of ``version`` has arrived (the caller stamps the time), with the
    ack's own ``ms`` in seconds (the node's part); raise unless it says ``applied``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is None:
            continue
        ack = json.loads(message["data"])
        if ack.get("version") != version:
            continue
        if ack.get("outcome") != "applied":
            raise RuntimeError(f"version {version} was not applied: {ack}")
        return float(ack["ms"]) / 1e3
    raise RuntimeError(f"no ack for version {version} within {timeout:.0f} s")


def busy_publisher(redis_url: str, files: Files, conn: Connection) -> None:
    """Child: on a rate received, announce new checkpoints to each instance of ``files`` at
    that rate (round robin, evenly spaced) until told to stop (any other message); then send
    back (publications sent, seconds). ``None`` ends it."""
    instances = sorted(files)
    notifiers = {i: CheckpointNotifier(redis_url, i) for i in instances}
    versions = dict.fromkeys(instances, 10)  # above the warm-up's
    try:
        while (rate := conn.recv()) is not None:
            interval = 1.0 / (float(rate) * len(instances))
            sent = 0
            start = next_at = time.perf_counter()
            while not conn.poll():
                now = time.perf_counter()
                if now < next_at:
                    time.sleep(min(next_at - now, 0.01))
                    continue
                instance = instances[sent % len(instances)]
                versions[instance] += 1
                path, sha256 = files[instance][versions[instance] % len(files[instance])]
                if notifiers[instance].notify(path, version=versions[instance], sha256=sha256):
                    sent += 1
                next_at += interval
                if time.perf_counter() - next_at > 0.25:  # behind: no catch-up burst
                    next_at = time.perf_counter()
            elapsed = time.perf_counter() - start
            if conn.recv() is None:
                return
            conn.send((sent, elapsed))
    finally:
        for notifier in notifiers.values():
            notifier.close()


def _swaps(url: str, instances: list[str]) -> float:
    """The node's ``fks_swaps_total`` over ``instances``, every source."""
    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = "|".join(re.escape(i) for i in instances)
    pattern = re.compile(rf'^fks_swaps_total\{{model="(?:{wanted})",[^}}]*\}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def _sample(
    notifier: CheckpointNotifier,
    acks: redis.client.PubSub,
    files: list[tuple[str, str]],
    version: int,
) -> tuple[float, float]:
    """One publication to m0: (notify → its applied ack arrived, the ack's node ms)."""
    time.sleep(PACE)
    path, sha256 = files[version % len(files)]
    start = time.perf_counter()
    if not notifier.notify(path, version=version, sha256=sha256):
        raise RuntimeError(f"m0 version {version} was not published")
    node = _await_ack(acks, version)
    return time.perf_counter() - start, node


def measure(models: int, samples: int, rounds: int) -> Measured:
    """One ``fks serve`` with ``models`` instances: RSS, threads and m0's notify → swapped
    with the others idle and busy (``samples`` each, over ``rounds`` alternations)."""
    ids = [f"m{i}" for i in range(models)]
    out = Measured(models)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        EmbeddedRedis(persistent=False) as server,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        files: Files = {}
        for n, instance in enumerate(ids):
            root = tmp / "models" / instance
            (root / "incoming").mkdir(parents=True)  # in the root, not scanned at preload
            make_checkpoint(root, 1, name="model_1.safetensors")
            saved = [
                make_checkpoint(root / "incoming", 100 * n + k, name=f"next_{k}.safetensors")
                for k in range(FILES)
            ]
            files[instance] = [(str(s.path), s.sha256) for s in saved]
        url, pid = stack.enter_context(fks_serve(tmp, server.url, ids))
        out.rss_ready, stat = rss_threads(pid)[0], Path(f"/proc/{pid}/stat")
        acks = _acks(server.url, "m0")
        stack.callback(acks.close)
        for instance in ids:  # each instance's first swap: first-time costs, out of the figures
            with CheckpointNotifier(server.url, instance) as warm:
                path, sha256 = files[instance][0]
                result = warm.notify(path, version=2, sha256=sha256, wait_for="all", timeout=30)
                if result.acks is None or not result.acks.ok:
                    raise RuntimeError(f"{instance}'s warm-up swap failed: {result}")
        notifier = stack.enter_context(CheckpointNotifier(server.url, "m0"))
        others = ids[1:]
        busy = stack.enter_context(
            child_process(busy_publisher, server.url, {i: files[i] for i in others})
        )
        version = 2
        per_round = max(1, samples // rounds)
        for _ in range(rounds):
            time.sleep(0.5)  # what the busy phase left queued in the node is done
            for _ in range(per_round):
                version += 1
                lag, node = _sample(notifier, acks, files["m0"], version)
                out.idle.append(lag)
                out.idle_node.append(node)
            if not others:
                continue
            busy.send(RATE)
            time.sleep(0.5)  # the node at its steady state
            swaps, began, cpu = _swaps(url, others), time.perf_counter(), stat_cpu(stat)[1]
            for _ in range(per_round):
                version += 1
                lag, node = _sample(notifier, acks, files["m0"], version)
                out.busy.append(lag)
                out.busy_node.append(node)
            out.cpu += stat_cpu(stat)[1] - cpu
            out.swapped += _swaps(url, others) - swaps
            out.swapped_s += time.perf_counter() - began
            busy.send("stop")
            sent, elapsed = busy.recv()
            out.published += sent
            out.published_s += elapsed
        time.sleep(0.5)
        out.rss_end, out.threads = rss_threads(pid)
    return out


def rows(results: list[Measured]) -> list[list[object]]:
    """The table's rows (``HEADERS``), per extra model against the one-model run."""
    one = next((r for r in results if r.models == 1), None)
    out: list[list[object]] = []
    for r in results:
        idle, busy = summary_ms(r.idle), summary_ms(r.busy)
        idle_node, busy_node = summary_ms(r.idle_node), summary_ms(r.busy_node)
        extra: object = "—"
        if one is not None and r.models > 1:
            extra = (r.rss_end - one.rss_end) / (r.models - 1) / MiB
        row: list[object] = [r.models, r.rss_ready / MiB, r.rss_end / MiB, extra, r.threads,
                             idle["p50"], idle["p99"], idle_node["p50"]]  # fmt: skip
        if r.busy:
            target = RATE * (r.models - 1)
            rate = r.published / r.published_s if r.published_s else 0.0
            swaps = r.swapped / r.swapped_s if r.swapped_s else 0.0
            cpu = 100 * r.cpu / r.swapped_s if r.swapped_s else 0.0
            row += [busy["p50"], busy["p99"], busy_node["p50"], cpu, target, rate, swaps]
        else:
            row += ["—"] * 7
        out.append(row)
    return out


def notes(table_rows: list[list[object]]) -> list[str]:
    """A sentence for each busy phase whose publisher fell short of the asked rate (by more
    than 5 %), or whose node swapped fewer than were announced (it coalesced the rest)."""
    out, cores = [], len(os.sched_getaffinity(0))
    for row in table_rows:
        models, asked, achieved, swapped = row[0], row[-3], row[-2], row[-1]
        if not isinstance(asked, float) or not isinstance(achieved, float):
            continue
        assert isinstance(swapped, float)
        if achieved < 0.95 * asked:
            out.append(
                f"{models} models: the publisher achieved {achieved:.0f} of the {asked:.0f} "
                f"publications/s asked ({cores} cores shared by it, Redis, the node "
                "and this process): m0's busy figures are at that rate."
            )
        if swapped < 0.95 * achieved:
            out.append(
                f"{models} models: the node swapped the others {swapped:.0f} times/s for "
                f"{achieved:.0f} publications/s: it coalesced the rest (newest wins)."
            )
    return out


def run(quick: bool = False) -> list[list[object]]:
    """Rows for N = 1, 4, 16 (quick: 1 and 4, 8 samples per phase in one round; else 40 in
    4 rounds)."""
    samples, rounds = (8, 1) if quick else (40, 4)
    return rows([measure(n, samples, rounds) for n in (QUICK_MODELS if quick else MODELS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1 and 4, 8 samples")
    args = parser.parse_args()
    out = run(args.quick)
    print(table(HEADERS, out))
    for line in notes(out):
        print(f"\n{line}")


if __name__ == "__main__":
    main()
