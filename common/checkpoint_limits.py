"""How much of a checkpoint a node is willing to believe (issue 12).

Checked before anything is built from the file: its size (``max_bytes``, also the bound on
the archive's declared sizes) and its weights (``max_parameters``, both as the policy_config
declares them and as the tensors hold them). Settings: ``FKS_MAX_CHECKPOINT_BYTES``,
``FKS_MAX_PARAMETERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

__all__ = ["CheckpointLimits"]


@dataclass(frozen=True, slots=True)
class CheckpointLimits:
    """Bounds on one checkpoint: file bytes and parameters."""

    max_bytes: int = 1 << 30
    max_parameters: int = 100_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_parameters < 1:
            raise ValueError(f"checkpoint limits must be positive, got {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointLimits:
        """The limits a node's :class:`~common.settings.Settings` name."""
        return cls(settings.max_checkpoint_bytes, settings.max_parameters)
