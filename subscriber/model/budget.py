"""How many rows one request may send to the served model (issue 24).

Two limits, both the node's settings: ``FKS_MAX_BATCH_ROWS`` (rows, whatever the model) and
``FKS_MAX_ACTIVATION_BYTES`` (the memory one forward pass may hold, from the cost the served
model's probe measured: ``fixed + per_row * rows``, and for a cost that grows faster than
rows no more rows than were measured within it, ``subscriber/model/activations.py``). The
inference routes answer 413 over the second (``/sac/benchmark`` 400, as over its other caps),
with the reason and the largest batch this model takes; ``/sac/model/info`` reports both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings
    from subscriber.model.snapshot import ServedModel

__all__ = ["largest_batch", "over_activation_budget"]


def largest_batch(model: ServedModel, settings: Settings) -> int:
    """The most rows one request to ``model`` may send (0: none)."""
    fit = model.io.cost.max_rows(settings.max_activation_bytes)
    return min(settings.max_batch_rows, fit)


def over_activation_budget(rows: int, model: ServedModel, settings: Settings) -> str | None:
    """Why ``rows`` rows would cost ``model`` more than ``FKS_MAX_ACTIVATION_BYTES``, or None."""
    cost, budget = model.io.cost, settings.max_activation_bytes
    if rows <= cost.max_rows(budget):
        return None
    need = cost.bytes(rows)
    if need > budget:
        why = f"{rows} rows need {need} bytes of activations ({cost.per_row} a row), over"
    else:  # beyond the largest batch measured of a cost that grows faster than rows
        why = (
            f"{rows} rows: this model's activations grow faster than its rows, and "
            f"{cost.measured_rows} rows are the most measured within"
        )
    return (
        f"{why} the limit of {budget} (FKS_MAX_ACTIVATION_BYTES); this model takes at most "
        f"{largest_batch(model, settings)} rows per request"
    )
