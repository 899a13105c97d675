"""What a served module takes and gives: the shapes a request and a response are checked by.

Every architecture's module declares ``input_shape`` (one request row: ``(state_dim,)``, or
``(window, state_dim)`` for a windowed ``dqn``), ``output_shape`` (``(action_dim,)`` or
``(n_actions,)``) and ``discrete``. A user module that declares no ``input_shape`` is taken to
read ``(state_dim,)`` from its ``state_dim`` attribute or config key; one that declares no
``output_shape`` gives what its probe pass gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a model is loaded, not before
    from torch import nn


__all__ = ["ModelIO", "declared_io"]


@dataclass(frozen=True, slots=True)
class ModelIO:
    """One row in, one row out; ``discrete``: the output is Q-values, the action an index."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    discrete: bool = False

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
