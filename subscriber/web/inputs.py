"""Request bodies as the served model's input: ``(rows, *input_shape)`` float32 (SPEC §12).

A model whose input is one state (``sac_actor``, ``dqn``) takes ``state`` as a list of
``state_dim`` numbers (``states``: a list of them). A windowed ``dqn`` (``window > 1``) takes
``state`` as ``window`` rows of ``state_dim`` numbers, oldest first (``states``: a list of such
windows). Anything else is a 400 that says which shape the served model wants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from subscriber.model.model_io import ModelIO
from subscriber.web.deps import bad

__all__ = ["not_finite_at", "to_inputs"]

Array = npt.NDArray[np.float32]


def to_inputs(rows: Sequence[object], io: ModelIO, name: str) -> Array:
    """``rows`` (one per request row) as the model's input; 400 for a wrong shape or a value
    that is not finite."""
    if not rows:
        raise bad(f"{name} is empty")
    expected = (len(rows), *io.input_shape)
    try:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: caught below
            states = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError):
        states = None
    if states is None or states.shape != expected:
        raise bad(f"{name} must be {_wanted(io, name)}; the served model takes {io.input_shape}")
    if (where := not_finite_at(states)) is not None:
        raise bad(f"{name}{where} is not finite (or outside the float32 range)")
    return states


def not_finite_at(values: Array) -> str | None:
    """Where the first value that is not finite sits (``"[i][j]"``), None when all are."""
    if np.isfinite(values).all():
        return None
    return "".join(f"[{int(k)}]" for k in np.argwhere(~np.isfinite(values))[0])


def _wanted(io: ModelIO, name: str) -> str:
    row = (
        f"{io.window} rows of {io.state_dim} numbers (a window of states, oldest first)"
        if io.window > 1
        else f"{io.state_dim} numbers"
    )
    return f"a list of {row}" if name == "states" else row
