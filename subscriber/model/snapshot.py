"""The served model: one immutable snapshot, swapped as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from common.staleness import ServedIdentity
from subscriber.model.inference import Runner
from subscriber.model.model_io import ModelIO

if TYPE_CHECKING:  # torch is imported when a model is loaded, not before
    from torch import nn

__all__ = ["ServedModel"]


@dataclass(frozen=True, slots=True, eq=False)
class ServedModel:
    """Everything a request needs, captured by one reference read of the holder."""

    policy: nn.Module | None  # None: served by the numpy runner, no module was built
    runner: Runner
    path: Path
    mtime_ns: int
    version: int
    generation: int
    sha256: str
    loaded_at: datetime
    source: str
    model_name: str = ""
    training_step: int = 0
    saved_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Files of another path must be at least this new to replace this decision (None: the
    # file's own mtime): the moment the decision was taken (a message, a rollback, a reload).
    newer_after_ns: int | None = None
    # The highest version known when this decision was taken (for an unversioned one).
    watermark: int = 0
    # The message that decided this model (channel or :latest), kept to restore :latest.
    message: bytes | None = None
    # The URL a remote checkpoint was fetched from (``path`` is then its cached copy): the
    # decision names it, and it is what a node announces.
    origin: str | None = None
    # The architecture (SPEC §12) and the shapes of one request row and one answer row.
    architecture: str = "sac_actor"
    io: ModelIO = ModelIO((28,), (1,))
    mtime_utc: str = field(init=False, default="")
    parameters: int = field(init=False, default=0)
    # Read by every request, so taken once from ``io`` and ``runner``: the state's size, the
    # action's (a continuous policy's dimensions; a discrete one's actions, its Q-values), and
    # whether the runner was compiled.
    state_dim: int = field(init=False, default=0)
    action_dim: int = field(init=False, default=0)
    discrete: bool = field(init=False, default=False)
    jit_compiled: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # RFC 3339 with 'Z', formatted once: every response echoes it.
        object.__setattr__(self, "mtime_utc", self.mtime.isoformat().replace("+00:00", "Z"))
        # The size of the network, counted once: the HTTP layer decides from it whether a
        # forward pass may run on the event loop.
        if self.policy is not None:
            count = sum(p.numel() for p in self.policy.parameters())
        else:
            count = int(getattr(self.runner, "parameters", 0))
        object.__setattr__(self, "parameters", count)
        object.__setattr__(self, "state_dim", self.io.state_dim)
        object.__setattr__(self, "action_dim", self.io.output_dim)
        object.__setattr__(self, "discrete", self.io.discrete)
        object.__setattr__(self, "jit_compiled", self.runner.compiled)

    @property
    def fingerprint(self) -> str:
        """The checkpoint served, comparable across processes (the workers of one port): where
        it came from and its sha256; not the generation, which each process counts alone."""
        return f"{self.origin or self.path}#{self.sha256}"

    @property
    def identity(self) -> ServedIdentity:
        return ServedIdentity(
            self.origin or str(self.path),
            self.mtime_ns,
            self.version,
            self.newer_after_ns,
            self.watermark,
            self.sha256,
        )

    @property
    def mtime(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)

    def summary(self) -> dict[str, object]:
        """A JSON-ready description (history entries, node registry, logs)."""
        return {
            "path": str(self.path),
            "version": self.version,
            "generation": self.generation,
            "model_name": self.model_name,
            "training_step": self.training_step,
            "sha256": self.sha256,
            "loaded_at": self.loaded_at.isoformat(),
            "source": self.source,
            "origin": self.origin,
            "architecture": self.architecture,
            "jit_compiled": self.jit_compiled,
        }
