"""How much of a checkpoint a node is willing to believe (issue 12).

Checked before anything is built from the file: its size (``max_bytes``, also the bound on
the archive's declared sizes) and its weights (``max_parameters``, both as the policy_config
declares them and as the tensors hold them). Settings: ``FKS_MAX_CHECKPOINT_BYTES``,
``FKS_MAX_PARAMETERS``. A config may also declare at most ``MAX_HIDDEN_LAYERS`` hidden layers:
a deep stack of width-1 layers costs little in parameters but much to build and to run.

What a request costs is bounded too (issue 24): ``max_activation_bytes``
(``FKS_MAX_ACTIVATION_BYTES``) is the most memory one forward pass may hold, input rows and
activations, measured when the model is verified by the node that serves it. A model whose
single row costs more is refused; a request of more rows than fit is refused by the node.
``max_batch_rows`` (``FKS_MAX_BATCH_ROWS``) is how far that measurement needs to look: a cost
that grows faster than rows is measured up to the largest batch a request may send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import CheckpointRejected
from common.settings import DEFAULT_MAX_ACTIVATION_BYTES, DEFAULT_MAX_BATCH_ROWS

if TYPE_CHECKING:
    from common.architectures import Architecture, ModelConfig
    from common.settings import Settings

__all__ = [
    "DEFAULT_MAX_ACTIVATION_BYTES",
    "DEFAULT_MAX_BATCH_ROWS",
    "MAX_HIDDEN_LAYERS",
    "CheckpointLimits",
    "check_declared",
]

MAX_HIDDEN_LAYERS = 64


@dataclass(frozen=True, slots=True)
class CheckpointLimits:
    """Bounds on one checkpoint: file bytes, parameters, the bytes one request may make its
    network hold, and the most rows a request may send."""

    max_bytes: int = 1 << 30
    max_parameters: int = 100_000_000
    max_activation_bytes: int = DEFAULT_MAX_ACTIVATION_BYTES
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS

    def __post_init__(self) -> None:
        bounds = (self.max_bytes, self.max_parameters, self.max_activation_bytes)
        if min(*bounds, self.max_batch_rows) < 1:
            raise ValueError(f"checkpoint limits must be positive, got {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointLimits:
        """The limits a node's :class:`~common.settings.Settings` name."""
        return cls(
            settings.max_checkpoint_bytes,
            settings.max_parameters,
            settings.max_activation_bytes,
            settings.max_batch_rows,
        )


def check_declared(
    target: Path, architecture: Architecture, config: ModelConfig, limits: CheckpointLimits
) -> dict[str, tuple[int, ...]]:
    """Refuse a config that declares more than ``limits``, before anything is built; the
    shapes of the tensors it declares."""
    hidden = getattr(config, "hidden", None)
    layers = len(hidden) if isinstance(hidden, list | tuple) else 0
    if layers > MAX_HIDDEN_LAYERS:
        raise CheckpointRejected(
            f"{target}: {layers} hidden layers declared (at most {MAX_HIDDEN_LAYERS})",
            reason="too_many_layers",
        )
    shapes = architecture.shapes(config)
    declared = sum(math.prod(shape) for shape in shapes.values())
    if declared > limits.max_parameters:
        raise CheckpointRejected(
            f"{target}: the config declares {declared} parameters "
            f"(at most {limits.max_parameters})",
            reason="too_many_parameters",
        )
    return shapes
