"""A serving node for ``bench/node_cpu.py`` (argv: URL ROOT): prints ``ready`` once
subscribed, then answers one line per command read from stdin:

- ``cpu`` → ``cpu JSON``: this process's CPU seconds so far, each thread's (by name), and the
  CPU seconds spent so far inside the stages that share a thread (parsing and judging on the
  listener, the swap and the ``:latest`` record on the applier), measured with each thread's
  own clock around the node's own methods;
- the thread ``bench-floor`` (:func:`bare_thread`, :func:`heard`) reads what is published on
  :data:`FLOOR_CHANNEL`: the floor of receiving, parsing and acking a notice;
- the thread ``bench-swap-floor`` (:func:`bare_thread`, :func:`swapper`) loads what is
  announced on :data:`SWAP_FLOOR_CHANNEL`: the floor of a swap in any design (hear, load,
  ack; one thread);
- ``cold FILE N PACE`` → ``cold JSON``: the median CPU seconds of ``json.loads`` of the
  notice in ``FILE``, ``PACE`` seconds apart (asleep, or spinning) and back to back
  (:func:`cold`);
- ``floor PATH N PACE`` → ``floor JSON``: the CPU seconds of each of ``N`` loads of ``PATH``
  with every check a swap runs (read, sha256, header and tensor checks, the runner and its
  probe: ``prepare_checkpoint``, on this thread and the sha256 thread beside it), ``PACE``
  seconds apart as the publications are.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._util import listening, stat_cpu
from common.settings import Settings
from subscriber import ServingNode
from subscriber.model.loader import prepare_checkpoint
from subscriber.runtime.heap import freeze_startup_heap

STAGES: defaultdict[str, float] = defaultdict(float)
# threads a load uses besides its own: the sha256 beside the decoding (common/checkpoint/digest.py)
HELPERS = "fks-sha256"


def timed(stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, its thread's CPU seconds added to ``STAGES[stage]`` on every call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            STAGES[stage] += time.thread_time() - start

    return wrapper


def thread_cpu() -> dict[str, float]:
    """CPU seconds of every live thread, by name (threads of one name summed)."""
    out: defaultdict[str, float] = defaultdict(float)
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[thread.name] += time.clock_gettime(clock)
        except (OSError, ProcessLookupError):  # it ended meanwhile
            continue
    return dict(out)


def native_tasks() -> dict[str, float]:
    """CPU seconds of the process's threads that Python did not start (BLAS, OpenMP, …), by
    their kernel name (clock ticks: 10 ms resolution)."""
    ours = {t.native_id for t in threading.enumerate()}
    out: defaultdict[str, float] = defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) in ours:
            continue
        try:
            name, seconds = stat_cpu(task / "stat")
        except OSError:  # it ended meanwhile
            continue
        out[f"native: {name}"] += seconds
    return dict(out)


def floor(path: Path, n: int, pace: float, node: ServingNode) -> list[float]:
    costs = []
    for _ in range(n):
        helpers = sum(v for k, v in thread_cpu().items() if k.startswith(HELPERS))
        start = time.thread_time()
        prepare_checkpoint(path, node.holder.roots, node.holder.options)
        elapsed = time.thread_time() - start
        after = sum(v for k, v in thread_cpu().items() if k.startswith(HELPERS))
        costs.append(elapsed + after - helpers)
        time.sleep(pace)
    return costs


FLOOR_CHANNEL = "fks-bench:floor"


def bare_thread(
    url: str, channel: str, answer: Callable[[bytes], bytes], ready: threading.Event
) -> None:
    """A bare subscriber of ``channel`` on its own connection: each message read (redis-py,
    hiredis), handed to ``answer`` and its reply PUBLISHed on ``<channel>:acks``, as an ack
    is. Nothing else: the floors below."""
    import redis

    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    ready.set()
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "message":
            client.publish(channel + ":acks", answer(message["data"]))


def heard(data: bytes) -> bytes:
    """The floor of hearing a notice at all, in this process and on this machine: parsed
    (``json.loads``), answered (thread ``bench-floor`` on :data:`FLOOR_CHANNEL`)."""
    json.loads(data)
    return b'{"outcome":"stale"}'


SWAP_FLOOR_CHANNEL = "fks-bench:swap-floor"
SWAP_FLOOR_SERVED: list[Any] = [None]  # the swap: the model loaded last replaces the one before


def swapper(node: ServingNode) -> Callable[[bytes], bytes]:
    """The floor of a swap in any design, in this process and on this machine (thread
    ``bench-swap-floor`` on :data:`SWAP_FLOOR_CHANNEL`): for each message nothing but what
    every design does: parse it (``json.loads``), load its file with every check a swap runs
    (``prepare_checkpoint``: confined, read, sha256, header and tensor checks, the runner and
    its probe), hold the result as the served model, answer. No judging, no failure memory,
    no registry, no ``:latest``."""
    roots, options = node.holder.roots, node.holder.options

    def swap(data: bytes) -> bytes:
        notice = json.loads(data)
        SWAP_FLOOR_SERVED[0] = prepare_checkpoint(notice["model_path"], roots, options)
        return b'{"outcome":"applied"}'

    return swap


def cold(raw: bytes, n: int, pace: float) -> dict[str, float]:
    """Median thread CPU seconds of one ``json.loads(raw)``: ``pace`` seconds apart (as the
    notices come), the thread asleep in between; ``pace`` apart, the thread spinning in
    between (it never leaves the CPU: what is lost meanwhile is not lost to this process'
    own sleep); and back to back. What running code cold costs on this machine."""
    out = {}
    for name, wait, spin in (
        ("paced", pace, False),
        ("paced, spinning", pace, True),
        ("back to back", 0.0, False),
    ):
        costs = []
        for _ in range(n):
            if spin:
                until = time.perf_counter() + wait
                while time.perf_counter() < until:
                    pass
            elif wait:
                time.sleep(wait)
            start = time.thread_time()
            json.loads(raw)
            costs.append(time.thread_time() - start)
        out[name] = statistics.median(costs)
    return out


def main() -> None:
    url, root = sys.argv[1], Path(sys.argv[2])
    node = ServingNode(Settings(redis_url=url, model_dir=root, default_model_dir=root))
    listener, decider, holder = node.listener, node.decider, node.holder
    listener._handle = timed("judge (listener)", listener._handle)  # type: ignore[method-assign]
    decider.apply_batch = timed("judge (applier)", decider.apply_batch)  # type: ignore[method-assign]
    holder.install = timed("swap", holder.install)  # type: ignore[method-assign]
    holder.trim._trim = timed("trim", holder.trim._trim)
    if node.recorder is not None:
        node.recorder.record = timed(":latest", node.recorder.record)  # type: ignore[method-assign]
    if node.settings.gc_freeze:  # as a server's startup does (subscriber/web/app.py)
        freeze_startup_heap()
    for name, channel, answer in (
        ("bench-floor", FLOOR_CHANNEL, heard),
        ("bench-swap-floor", SWAP_FLOOR_CHANNEL, swapper(node)),
    ):
        ready = threading.Event()
        threading.Thread(
            target=bare_thread, args=(url, channel, answer, ready), name=name, daemon=True
        ).start()
        ready.wait(10)
    with listening(node):
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if words == ["cpu"]:
                threads = {**thread_cpu(), **native_tasks()}
                report = {"process": time.process_time(), "threads": threads, "stages": STAGES}
                print("cpu", json.dumps(report), flush=True)
            elif words and words[0] == "cold":
                raw = Path(words[1]).read_bytes()
                print("cold", json.dumps(cold(raw, int(words[2]), float(words[3]))), flush=True)
            elif words and words[0] == "floor":
                costs = floor(Path(words[1]), int(words[2]), float(words[3]), node)
                print("floor", json.dumps(costs), flush=True)


if __name__ == "__main__":
    main()
