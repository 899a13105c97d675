"""What a served module takes and gives: the shapes a request and a response are checked by.

Every architecture's module declares ``input_shape`` (one request row: ``(state_dim,)``, or
``(window, state_dim)`` for a windowed ``dqn``), ``output_shape`` (``(action_dim,)`` or
``(n_actions,)``) and ``discrete``. A user module that declares no ``input_shape`` is taken to
read ``(state_dim,)`` from its ``state_dim`` attribute or config key; one that declares no
``output_shape`` gives what its probe pass gives.

What a request costs is measured when the model is verified (``subscriber/model/activations.py``)
and travels with its shapes: :class:`RequestCost`, the bytes a pass holds at once, as
``fixed + per_row * rows`` (and, for a cost that grows faster than rows, the largest batch
measured within the budget).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a model is loaded, not before
    from torch import nn


__all__ = ["ModelIO", "RequestCost", "declared_io"]


@dataclass(frozen=True, slots=True)
class RequestCost:
    """The memory one forward pass holds at once: ``fixed + per_row * rows`` bytes (the input
    rows and the activations; the weights are not counted). Zero: not measured.

    ``measured_rows``: for a cost that grows faster than rows (rows that interact), the
    largest batch whose cost was measured within the budget; ``fixed + per_row * rows`` then
    bounds what was measured up to it, and no larger batch is allowed (0: a cost linear in
    rows, no bound of its own)."""

    per_row: int = 0
    fixed: int = 0
    measured_rows: int = 0

    def bytes(self, rows: int) -> int:
        return self.fixed + self.per_row * rows

    def max_rows(self, budget: int) -> int:
        """The most rows a pass may take within ``budget`` bytes (0: not even one)."""
        if self.per_row <= 0:
            fit = 0 if self.fixed > budget else sys.maxsize
        else:
            fit = max(0, (budget - self.fixed) // self.per_row)
        return min(fit, self.measured_rows) if self.measured_rows else fit

    def at_least(self, other: RequestCost) -> RequestCost:
        """The larger of both, term by term, and the smaller bound on rows (two runners that
        may serve the same request)."""
        bounds = [rows for rows in (self.measured_rows, other.measured_rows) if rows]
        return RequestCost(
            max(self.per_row, other.per_row),
            max(self.fixed, other.fixed),
            min(bounds, default=0),
        )


@dataclass(frozen=True, slots=True)
class ModelIO:
    """One row in, one row out; ``discrete``: the output is Q-values, the action an index;
    ``cost``: what a request costs, once measured."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    discrete: bool = False
    cost: RequestCost = RequestCost()

    @property
    def state_dim(self) -> int:
        return self.input_shape[-1]

    @property
    def window(self) -> int:
        return self.input_shape[0] if len(self.input_shape) == 2 else 1

    @property
    def output_dim(self) -> int:
        return self.output_shape[0] if self.output_shape else 0


def declared_io(module: nn.Module) -> ModelIO:
    """The shapes ``module`` declares; ``ValueError`` when it declares none that fit."""
    shape = _shape(getattr(module, "input_shape", None))
    if shape is None:
        dim = getattr(module, "state_dim", None)
        if dim is None:
            config = getattr(module, "config", None)
            dim = config.get("state_dim") if isinstance(config, dict) else None
        if type(dim) is not int:
            raise ValueError("the module declares neither input_shape nor state_dim")
        shape = (dim,)
    if len(shape) not in (1, 2):
        raise ValueError(f"input_shape {shape} is not (state_dim,) or (window, state_dim)")
    output = _shape(getattr(module, "output_shape", None))
    if output is not None and len(output) != 1:
        raise ValueError(f"output_shape {output} is not one dimension")
    return ModelIO(shape, output, bool(getattr(module, "discrete", False)))


def _shape(value: object) -> tuple[int, ...] | None:
    if not isinstance(value, tuple | list) or not value:
        return None
    if not all(type(v) is int and 0 < v <= 1 << 16 for v in value):
        raise ValueError(f"declared shape {value!r} is not positive integers")
    return tuple(value)
