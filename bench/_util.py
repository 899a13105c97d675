"""Shared pieces of the benchmarks: checkpoints, a fleet of node processes, an in-process
node listening and the swaps it makes, a publisher in a process of its own, best-of timing,
percentiles and plain-text tables.

torch is imported only where a checkpoint is made: ``bench/load.py`` (a process started for
every load run) imports this module and would otherwise pay ~2 s of torch import each time.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.checkpoint import SavedCheckpoint
    from common.policy import PolicyConfig
    from subscriber import ServingNode
    from subscriber.model.snapshot import ServedModel


def make_checkpoint(
    root: Path, version: int, *, name: str | None = None, config: PolicyConfig | None = None
) -> SavedCheckpoint:
    """A random actor saved as ``model_<version>.safetensors`` (what ``fks train`` writes; or
    ``name``) in ``root``."""
    import torch

    from common.checkpoint import save_checkpoint
    from common.policy import SACActor

    torch.manual_seed(version)
    return save_checkpoint(
        root / (name or f"model_{version}.safetensors"), SACActor(config), version=version
    )


@contextlib.contextmanager
def node_fleet(redis_url: str, root: Path, nodes: int, *extra: str) -> Iterator[NodeFleet]:
    """A :class:`NodeFleet`, once every node is subscribed; closed at the end."""
    fleet = NodeFleet(redis_url, root, nodes, *extra)
    try:
        fleet.wait_ready()
        yield fleet
    finally:
        fleet.close()


class NodeFleet:
    """``nodes`` serving processes (``bench/fanout_node.py``, named ``n0``…, ``extra`` argv
    after the name) on one Redis and one model root, all started at once (use
    :func:`node_fleet`). Each swap a node reports is kept: :attr:`swaps` (version → the nodes'
    perf_counter stamps) and :attr:`cpu_at` (pid → the node's CPU seconds at each of its
    swaps)."""

    def __init__(self, redis_url: str, root: Path, nodes: int, *extra: str) -> None:
        self.nodes = nodes
        self.swaps: dict[int, list[float]] = {}
        self.cpu_at: dict[int, list[float]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Barrier(nodes + 1)
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.fanout_node", redis_url, str(root), f"n{i}", *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(nodes)
        ]
        for proc in self.procs:
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                self._ready.wait()
            elif line.startswith("swap"):
                _, version, at, cpu = line.split()
                with self._lock:
                    self.swaps.setdefault(int(version), []).append(float(at))
                    self.cpu_at.setdefault(proc.pid, []).append(float(cpu))

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Until every node said it is subscribed."""
        self._ready.wait(timeout)

    def wait_swapped(
        self, version: int, timeout: float = 30.0, every: float = 0.001
    ) -> list[float]:
        """The nodes' swap stamps of ``version`` once every node swapped it, or what came
        within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.swaps.get(version, [])) < self.nodes and time.monotonic() < deadline:
            time.sleep(every)
        with self._lock:
            return list(self.swaps.get(version, []))

    def close(self) -> None:
        """Close every node's stdin (its signal to stop) and wait for it to exit."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:  # 32 nodes stopping at once on 2 shared cores can take a while
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:  # a node that will not exit is not our figure
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def listening(node: ServingNode) -> Iterator[ServingNode]:
    """``node`` started, once its listener is subscribed (a notification sent now is heard);
    stopped at the end."""
    node.start()
    try:
        while not node.listener.connected:
            time.sleep(0.01)
        yield node
    finally:
        node.stop()


class SwapWatch:
    """Give it to ``node.holder.on_swap``: the perf_counter stamp of each version swapped in
    (:attr:`stamps`), and a wait for the one version :meth:`expect` names."""

    def __init__(self) -> None:
        self.stamps: dict[int, float] = {}
        self._target = 0
        self._swapped = threading.Event()

    def __call__(self, model: ServedModel) -> None:
        self.stamps[model.version] = time.perf_counter()
        if model.version == self._target:
            self._swapped.set()

    def expect(self, version: int) -> None:
        """The next :meth:`wait` is for ``version``."""
        self._swapped.clear()
        self._target = version

    def wait(self, timeout: float) -> bool:
        """Whether the expected version was swapped in within ``timeout`` seconds."""
        return self._swapped.wait(timeout)


@contextlib.contextmanager
def child_process(target: Callable[..., None], *args: object) -> Iterator[Connection]:
    """``target(*args, conn)`` in a spawned process (a publisher apart from the node, as a
    trainer is); yields our end of ``conn``; ``None`` sent at the end tells it to stop."""
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=target, args=(*args, theirs))
    child.start()
    try:
        yield ours
    finally:
        ours.send(None)
        child.join(10)


def best_us(run: Callable[[Any], object], arg: Any, n: int, rounds: int = 5) -> float:
    """µs per call of ``run(arg)``: ``n`` calls a round, the best of ``rounds`` rounds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            run(arg)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean of seconds, in milliseconds."""
    ms = [v * 1e3 for v in values]
    return {
        "p50": pct(ms, 50),
        "p90": pct(ms, 90),
        "p99": pct(ms, 99),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (also readable on a terminal)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def stat_cpu(stat: Path) -> tuple[str, float]:
    """The name and CPU seconds (user + system, clock ticks) that a ``/proc/<pid>/stat`` or
    ``/proc/<pid>/task/<tid>/stat`` file holds."""
    text = stat.read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
