"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor

if TYPE_CHECKING:
    from subscriber import ServingNode


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, every: float = 0.02) -> float:
    """Poll until ``predicate()`` is truthy; return the seconds it took, fail after timeout.
    Every 20 ms by default: most predicates ask a server over HTTP, and polling at 200 Hz
    cost both processes CPU the other test worker needed."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)
    return time.monotonic() - start


@contextmanager
def repeating(action: Callable[[], object], pause: float = 0.0) -> Iterator[None]:
    """While inside, a thread calls ``action`` over and over, ``pause`` seconds apart."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            action()
            if pause:
                time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def heartbeats_held(*nodes: ServingNode) -> Iterator[None]:
    """No heartbeat of ``nodes`` is written (nor any ack) while inside: a test that makes
    Redis lose its data and then publishes decides that the publication comes before the
    nodes' next look at Redis (under load, a 0.2 s heartbeat once came first)."""
    locks = [node.registry._lock for node in nodes]
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in locks:
            lock.release()


def new_dir(path: Path) -> Path:
    """Make the directory ``path`` (its parent exists, it does not) and return it."""
    path.mkdir()
    return path


def served_version(node: ServingNode) -> int | None:
    """The version ``node`` serves now, None before it serves anything."""
    model = node.holder.current()
    return model.version if model else None


class Call:
    """Pickles as ``function(*args)``: what a hostile file can ask the unpickler to run."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.function, self.args)


def write_checkpoint(
    root: Path,
    version: int,
    *,
    name: str | None = None,
    config: PolicyConfig | None = None,
    seed: int | None = None,
) -> SavedCheckpoint:
    """Save a fresh random actor as ``model_<version>.pt`` (or ``name``) in ``root``."""
    torch.manual_seed(version if seed is None else seed)
    actor = SACActor(config)
    return save_checkpoint(root / (name or f"model_{version}.pt"), actor, version=version)


def bump_mtime(path: Path, seconds: float = 1.0) -> None:
    """Move a file's mtime forward (file systems tick coarsely)."""
    st = path.stat()
    ns = st.st_mtime_ns + int(seconds * 1e9)
    os.utime(path, ns=(ns, ns))


def write_poisoned_checkpoint(root: Path, version: int) -> SavedCheckpoint:
    """A checkpoint that loads (finite weights, a finite probe) but answers NaN for a state
    whose last value is 10 (``tests/fleet.py`` POISON_STATE): a model that fails requests."""
    actor = SACActor()
    with torch.no_grad():
        first, second = actor.trunk[0], actor.trunk[2]
        assert isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.Linear)
        first.weight.zero_()
        first.weight[:, 27] = 1e19  # 0 below a last value of 5, huge above it
        first.bias.fill_(-5e19)
        second.weight.fill_(1e20)  # inf everywhere ...
        actor.mean.weight.copy_(torch.tensor([[1.0, -1.0] * 128]))  # ... inf - inf = NaN
    return save_checkpoint(root / f"model_{version}.pt", actor, version=version)


class AttendRows(torch.nn.Module):
    """Rows that attend to rows: each row's answer mixes every row of the batch (``h @ hᵀ``,
    softmax, ``@ h``), so a pass holds ``heads x rows x rows`` scores, a cost that grows as
    rows². ``wide``: a first layer that wide (ReLU), freed before the scores are made, holds
    more than they do at a few rows."""

    def __init__(self, width: int = 16, heads: int = 1, wide: int = 0) -> None:
        super().__init__()
        self.heads = heads
        self.wide = torch.nn.Linear(28, wide) if wide else None
        self.inp = torch.nn.Linear(wide or 28, width * heads)
        self.out = torch.nn.Linear(width * heads, 1)
        self.input_shape = (28,)
        self.output_shape = (1,)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        rows = state.shape[0]
        wide = state if self.wide is None else torch.relu(self.wide(state))  # freed below
        h = self.inp(wide).reshape(rows, self.heads, -1).transpose(0, 1)
        del wide
        weights = torch.softmax(h @ h.transpose(1, 2), dim=-1)
        mixed = (weights @ h).transpose(0, 1).reshape(rows, -1)
        return torch.tanh(self.out(mixed))
