"""The built-in ``dqn`` architecture: a Q-network over the state, discrete actions (SPEC §12).

``window == 1``: an MLP, state -> hidden ReLU layers -> one Q-value per action. ``window > 1``:
an LSTM reads the last ``window`` states (oldest first) and the MLP reads its last output, as
in the ``lstm_dqn_v1`` lineage; a request then sends ``window`` rows of ``state_dim`` values.
The served action is the argmax of the Q-values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from common.architectures.config import ConfigError
from common.architectures.mlp import MLPLayers

__all__ = ["DQN", "DQN_DEFAULTS", "MAX_WINDOW", "DQNConfig"]

MAX_WINDOW = 256
MAX_LAYERS = 64


@dataclass(frozen=True, slots=True)
class DQNConfig:
    """Shape of a Q-network; every key has a default."""

    state_dim: int = 28
    n_actions: int = 3
    hidden: tuple[int, ...] = (256, 256)
    window: int = 1
    lstm_hidden: int = 128

    def __post_init__(self) -> None:
        sizes = (self.state_dim, self.n_actions, self.window, self.lstm_hidden, *self.hidden)
        if any(type(v) is not int or v <= 0 for v in sizes):
            raise ValueError(f"dqn sizes must be positive integers, got {self.to_dict()}")
        if len(self.hidden) > MAX_LAYERS:
            raise ConfigError(f"dqn: {len(self.hidden)} hidden layers (at most {MAX_LAYERS})")
        if self.window > MAX_WINDOW:
            raise ConfigError(f"dqn: window {self.window} (at most {MAX_WINDOW})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DQNConfig:
        """From checked JSON values (``ValueError`` for a wrong type or range)."""
        hidden = data.get("hidden", list(DQN_DEFAULTS["hidden"]))
        if not isinstance(hidden, list | tuple):
            raise ValueError(f"dqn hidden is a {type(hidden).__name__}, not a list")
        values = {**DQN_DEFAULTS, **data, "hidden": tuple(hidden)}
        return cls(**values)


DQN_DEFAULTS: dict[str, Any] = DQNConfig().to_dict()


class DQN(nn.Module):
    """Q-values ``(batch, n_actions)`` for states ``(batch, state_dim)`` or, with a window,
    ``(batch, window, state_dim)``."""

    architecture = "dqn"
    discrete = True

    def __init__(self, config: DQNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DQNConfig()
        width = c.state_dim
        self.lstm: nn.LSTM | None = None
        if c.window > 1:
            self.lstm = nn.LSTM(c.state_dim, c.lstm_hidden, batch_first=True)
            width = c.lstm_hidden
        layers: list[nn.Module] = []
        for size in c.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, c.n_actions)

    @property
    def input_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.window, c.state_dim) if c.window > 1 else (c.state_dim,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.config.n_actions,)

    def forward(self, states: Tensor) -> Tensor:
        h = states
        if self.lstm is not None:
            out, _ = self.lstm(states)
            h = out[:, -1]
        q: Tensor = self.head(self.trunk(h))
        return q

    def mlp_layers(self) -> MLPLayers | None:
        """The numpy fast path's description; None with an LSTM (that runs in torch)."""
        if self.lstm is not None:
            return None
        linears = [m for m in self.trunk if isinstance(m, nn.Linear)] + [self.head]
        return MLPLayers(linears, output="identity")
