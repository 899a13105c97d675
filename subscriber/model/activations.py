"""What one request costs the node in memory, measured when a model is verified (issue 24).

A checkpoint's limits (``FKS_MAX_CHECKPOINT_BYTES``, ``FKS_MAX_PARAMETERS``) bound what the
file holds; a request's cost is its activations: rows × what one row makes the network hold
(a windowed ``dqn``: ``window × lstm_hidden`` floats a row for the LSTM's output alone). So the
probe pass that every checkpoint passes before it is served also measures it:

- a pass in torch (any architecture, the built-in ones included) runs under
  :class:`_LiveBytes`, a ``TorchFunctionMode`` (torch's public hook on every torch function
  and tensor method) that sees every tensor a call creates and when its storage is freed, and
  keeps the most bytes alive at once. It runs over the probe's 8 rows, its first row and its
  first two: from 1 to 8 rows, the cost of a row and what is fixed. If the cost grows faster
  than rows between 1, 2 and 8 (the peak does, or any one tensor does: attention of rows to
  rows), the model is measured again at more rows, twice as many at most each time, until
  the largest batch within the budget (at most ``FKS_MAX_BATCH_ROWS``) is found, and no larger
  batch is allowed. What is not measured: a cost that grows faster only beyond 8 rows while
  every tensor of a pass grows in proportion up to 8 (a branch on the batch size), and what a
  single call holds only inside itself, which is not a tensor it returns: a fused kernel's
  scratch (torch's LSTM on the CPU: measured, the node's resident memory grows by about twice
  what is counted for it) or the intermediates of a function written in Python;
- a pass in numpy (the built-in actor's and an MLP's fast path) declares what it allocates for
  one row (``row_bytes``): every array of its pass, an upper bound.

Both add the input row itself (``4 × prod(input_shape)`` bytes). A checkpoint whose single row
costs more than ``FKS_MAX_ACTIVATION_BYTES`` is refused (``too_many_activations``); every
request is held to ``rows × per_row + fixed`` within it, and to the largest batch measured for
a cost that grows faster than rows (``subscriber/model/budget.py``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.overrides import TorchFunctionMode

from common.errors import CheckpointRejected
from common.limits import DEFAULT_MAX_ACTIVATION_BYTES, DEFAULT_MAX_BATCH_ROWS
from subscriber.model.model_io import RequestCost

__all__ = ["check_row_cost", "declared_cost", "measured_pass", "peak_bytes"]

Array = npt.NDArray[np.float32]

# Passes of more rows that a cost growing faster than rows may take to find its largest batch.
MAX_SEARCH_PASSES = 16


class _LiveBytes(TorchFunctionMode):
    """The bytes of the storages that torch calls create while the mode is on: how many are
    alive now (``live``) and the most at once (``peak``). ``known`` storages (the input rows)
    are not counted. Thread-local, as every mode is: a request served meanwhile on another
    thread is not counted."""

    def __init__(self, known: set[int]) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.made: list[tuple[str, int]] = []
        self._known = known
        self._alive: dict[int, weakref.ref[torch.UntypedStorage]] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: object,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        created = list(_tensors(out))
        if created:
            given = {_address(t) for t in _tensors((args, kwargs))} | self._known
            name = getattr(func, "__name__", "?")
            for tensor in created:
                self._track(name, tensor, given)
        return out

    def _track(self, name: str, tensor: torch.Tensor, given: set[int | None]) -> None:
        address = _address(tensor)
        if address is None or address in given or address in self._alive:
            return  # a view of an input, an in-place or out= result, or counted already
        storage = tensor.untyped_storage()
        size = storage.nbytes()
        if size == 0:
            return
        self._alive[address] = weakref.ref(storage, self._freed(address, size))
        self.made.append((name, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _freed(self, address: int, size: int) -> Callable[[object], None]:
        def freed(_: object) -> None:
            if self._alive.pop(address, None) is not None:
                self.live -= size

        return freed

    def close(self) -> None:
        """Stop counting: what the pass returned may be freed later, on any thread."""
        self._alive.clear()


def _tensors(value: object) -> Iterator[torch.Tensor]:
    """The tensors in ``value``: a tensor, or tuples, lists and dicts of them (any depth)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _address(tensor: torch.Tensor) -> int | None:
    try:
        return int(tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # a tensor without storage (meta, sparse)
        return None


@dataclass(frozen=True, slots=True)
class _Pass:
    """One measured pass: the most bytes alive at once (the input rows added) and what each
    torch call created, in order (the call's name and its storage's bytes)."""

    peak: int
    made: tuple[tuple[str, int], ...]


def _measure(run: Callable[[Array], Array], states: Array) -> tuple[Array, _Pass]:
    meter = _LiveBytes({int(states.__array_interface__["data"][0])})
    try:
        with meter:
            out = run(states)
        return out, _Pass(meter.peak + _input_bytes(states) * len(states), tuple(meter.made))
    finally:
        meter.close()


def peak_bytes(run: Callable[[Array], Array], states: Array) -> int:
    """The most bytes ``run(states)`` holds at once, the input rows included: what a request
    of these rows costs, as measured."""
    return _measure(run, states)[1].peak


def measured_pass(
    run: Callable[[Array], Array],
    states: Array,
    *,
    budget: int = DEFAULT_MAX_ACTIVATION_BYTES,
    max_rows: int = DEFAULT_MAX_BATCH_ROWS,
) -> tuple[Array, RequestCost]:
    """``run(states)`` (the probe's rows, at least three) and what a request costs it.

    The peak bytes of a pass over all rows and of one over the first row alone give
    ``per_row`` (their difference, per extra row) and ``fixed``. A pass over the first two
    rows tells whether the cost grows faster than rows (:func:`_grows`); if it does, the
    largest batch within ``budget`` (at most ``max_rows``) is found by measuring passes of
    more rows (:func:`_largest_batch`), and the cost is bounded by what was measured."""
    rows = len(states)
    if rows < 3:
        raise ValueError(f"measuring a cost needs at least 3 probe rows, got {rows}")
    out, many = _measure(run, states)
    one, two = (_measure(run, states[:n])[1] for n in (1, 2))
    per_row = math.ceil(max(0, many.peak - one.peak) / (rows - 1))
    fixed = max(0, one.peak - per_row)
    if not _grows(one, two, many, rows):
        return out, RequestCost(per_row, fixed)
    known = {1: one.peak, 2: two.peak, rows: many.peak}

    def cost_at(count: int) -> int:
        return _measure(run, _more_rows(states, count))[1].peak

    largest = _largest_batch(cost_at, known, fixed, budget, max_rows)
    if largest == 0:  # not even one row fits: refused by check_row_cost
        return out, RequestCost(max(per_row, one.peak - fixed), fixed)
    bound = max(math.ceil((cost - fixed) / n) for n, cost in known.items() if n <= largest)
    return out, RequestCost(max(per_row, bound), fixed, largest)


def _grows(one: _Pass, two: _Pass, many: _Pass, rows: int) -> bool:
    """Whether a cost grows faster than rows between 1, 2 and ``rows`` rows: the peak does,
    or any one tensor of the pass does (a growing part that a larger one hides at a few rows:
    ``rows x rows`` attention scores beside a wide layer), or the passes made different calls
    (nothing to compare: taken as growing)."""
    extra = rows - 2
    if many.peak - two.peak > extra * (two.peak - one.peak):
        return True
    names = [[name for name, _ in each.made] for each in (one, two, many)]
    if not names[0] == names[1] == names[2]:
        return True
    sizes = zip(*([size for _, size in each.made] for each in (one, two, many)), strict=True)
    return any(c - b > extra * (b - a) for a, b, c in sizes)


def _more_rows(states: Array, rows: int) -> Array:
    """``rows`` rows: the probe's, then seeded random ones of the same shape."""
    if rows <= len(states):
        return states[:rows]
    generator = np.random.default_rng(rows)
    extra = generator.standard_normal((rows - len(states), *states.shape[1:]), np.float32)
    return np.concatenate([states, extra])


def _largest_batch(
    cost_at: Callable[[int], int], known: dict[int, int], fixed: int, budget: int, cap: int
) -> int:
    """The largest batch measured within ``budget`` (at most ``cap`` rows; 0: not one row),
    ``known`` the costs measured so far (filled in as passes are measured).

    Each pass is at most twice the rows of the largest within budget, as many as a power law
    through the last two measurements predicts the budget allows (so a pass that crosses the
    budget holds at most 2^(p-1) times it for a cost that grows as rows^p); one over budget
    is followed by passes between it and the largest within, until they are within 1/32 of
    each other."""
    for _ in range(MAX_SEARCH_PASSES):
        over = min((n for n, cost in known.items() if cost > budget), default=None)
        within = [n for n, cost in known.items() if cost <= budget and (over is None or n < over)]
        largest = max(within, default=0)
        if largest == 0 or largest >= cap:
            return min(largest, cap)
        if over is not None and over - largest <= max(1, largest // 32):
            return largest
        below = max((n for n in within if n < largest), default=None)
        guess = _power_law_rows(known, below if over is None else over, largest, fixed, budget)
        rows = min(guess, 2 * largest, cap, (over or cap + 1) - 1)
        if rows <= largest:
            return largest
        known[rows] = cost_at(rows)
    over = min((n for n, cost in known.items() if cost > budget), default=None)
    return max(n for n, cost in known.items() if cost <= budget and (over is None or n < over))


def _power_law_rows(
    known: dict[int, int], other: int | None, anchor: int, fixed: int, budget: int
) -> int:
    """The rows at which ``fixed + a * rows^p`` reaches ``budget``, the power law through the
    variable parts measured at ``anchor`` and ``other`` (p at least 1)."""
    variable, room = known[anchor] - fixed, budget - fixed
    if room <= 0:
        return anchor
    if variable <= 0:
        return 2 * anchor
    power = 1.0
    if other is not None and known[other] - fixed > 0:
        ratio = math.log((known[other] - fixed) / variable) / math.log(other / anchor)
        power = max(1.0, ratio)
    return int(anchor * (room / variable) ** (1 / power))


def declared_cost(row_bytes: int, states: Array) -> RequestCost:
    """The cost of a numpy pass that allocates ``row_bytes`` a row (``row_bytes`` of the
    runner), plus the input row of ``states``."""
    return RequestCost(row_bytes + _input_bytes(states))


def _input_bytes(states: Array) -> int:
    return int(states[0].size) * 4  # float32, as to_inputs makes them


def check_row_cost(path: Path, cost: RequestCost, budget: int) -> None:
    """Refuse (``too_many_activations``) a model whose single row costs over ``budget``."""
    if cost.bytes(1) > budget:
        raise CheckpointRejected(
            f"{path}: one request row needs {cost.bytes(1)} bytes of activations "
            f"({cost.per_row} a row, {cost.fixed} fixed), over the limit of {budget} "
            "(FKS_MAX_ACTIVATION_BYTES)",
            reason="too_many_activations",
        )
