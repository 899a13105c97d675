"""The served network: a SAC actor, a tanh-squashed Gaussian policy (28-dim state -> action).

It is the built-in architecture ``sac_actor`` (``builtin.py``); SPEC §6 imports it as
``from common.policy import SACActor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from common.architectures.mlp import MLPLayers

__all__ = [
    "PolicyConfig",
    "SACActor",
    "config_from_shapes",
    "parameter_count",
    "state_shapes",
]

LOG_2 = math.log(2.0)
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Shape of an actor; stored in every checkpoint so a server can rebuild it."""

    state_dim: int = 28
    action_dim: int = 1
    hidden: tuple[int, ...] = (256, 256)
    log_std_min: float = LOG_STD_MIN
    log_std_max: float = LOG_STD_MAX

    def __post_init__(self) -> None:
        dims = (self.state_dim, self.action_dim, *self.hidden)
        if not self.hidden or any(not _is_int(d) or d <= 0 for d in dims):
            raise ValueError(f"policy dimensions must be positive integers, got {self}")
        if not all(math.isfinite(b) for b in (self.log_std_min, self.log_std_max)):
            raise ValueError("log_std_min and log_std_max must be finite")
        if not self.log_std_min < self.log_std_max:
            raise ValueError("log_std_min must be below log_std_max")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: object) -> PolicyConfig:
        """Rebuild from :meth:`to_dict`; ``ValueError`` on anything else.

        Nothing is coerced: dimensions are ints (not bools, floats or strings), ``hidden`` a
        list or tuple of them, the log-std bounds finite real numbers.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"policy config is a {type(data).__name__}, not a dict")
        missing = [k for k in ("state_dim", "action_dim", "hidden") if k not in data]
        if missing:
            raise ValueError(f"malformed policy config: missing {', '.join(missing)}")
        hidden = data["hidden"]
        if not isinstance(hidden, list | tuple):
            raise ValueError(f"policy config hidden is a {type(hidden).__name__}, not a list")
        bounds = (data.get("log_std_min", LOG_STD_MIN), data.get("log_std_max", LOG_STD_MAX))
        if not all(_is_int(v) for v in (data["state_dim"], data["action_dim"], *hidden)):
            raise ValueError("policy config dimensions must be integers")
        if not all(_is_real(b) for b in bounds):
            raise ValueError("policy config log-std bounds must be numbers")
        try:
            low, high = float(bounds[0]), float(bounds[1])
        except OverflowError:  # an int beyond any float
            raise ValueError("policy config log-std bounds must be finite") from None
        return cls(
            state_dim=data["state_dim"],
            action_dim=data["action_dim"],
            hidden=tuple(hidden),
            log_std_min=low,
            log_std_max=high,
        )


def parameter_count(config: PolicyConfig) -> int:
    """The weights an actor of ``config`` holds, from the config alone: nothing is built."""
    widths = (config.state_dim, *config.hidden)
    trunk = sum((fan_in + 1) * fan_out for fan_in, fan_out in pairwise(widths))
    return trunk + 2 * (widths[-1] + 1) * config.action_dim  # the mean and log-std heads


def state_shapes(config: PolicyConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in the state_dict of an actor of ``config``,
    from the config alone (what a checkpoint of it must hold, and nothing more)."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = config.state_dim
    for index, size in enumerate(config.hidden):
        shapes[f"trunk.{2 * index}.weight"] = (size, width)
        shapes[f"trunk.{2 * index}.bias"] = (size,)
        width = size
    for head in ("mean", "log_std"):
        shapes[f"{head}.weight"] = (config.action_dim, width)
        shapes[f"{head}.bias"] = (config.action_dim,)
    return shapes


def config_from_shapes(shapes: Mapping[str, Sequence[int]]) -> PolicyConfig:
    """The config of a bare state_dict, from its tensors' shapes; ``ValueError`` if it is not
    an actor's (the log-std bounds, which no shape tells, are the defaults)."""
    hidden: list[int] = []
    while (shape := shapes.get(f"trunk.{2 * len(hidden)}.weight")) is not None:
        if len(shape) != 2:
            raise ValueError(f"trunk.{2 * len(hidden)}.weight is not a matrix")
        hidden.append(int(shape[0]))
    first, mean = shapes.get("trunk.0.weight"), shapes.get("mean.weight")
    if first is None or mean is None or len(mean) != 2:
        raise ValueError("not a SACActor state_dict (no trunk.*.weight / mean.weight)")
    return PolicyConfig(state_dim=int(first[1]), action_dim=int(mean[0]), hidden=tuple(hidden))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _UninitialisedLinear(nn.Linear):
    """An ``nn.Linear`` left as ``torch.empty``: for weights that are loaded right after.

    Random initialisation is most of the cost of building an actor (~0.5 ms for a 256x256
    layer on one core), and a server overwrites every weight with ``load_state_dict``.
    """

    def reset_parameters(self) -> None:
        pass


class SACActor(nn.Module):
    """MLP trunk, then mean and log-std heads; actions are ``tanh`` of a Gaussian sample.

    ``initialise=False`` skips the random initialisation: only for an actor whose every
    weight is loaded next with ``load_state_dict(strict=True)``.
    """

    architecture = "sac_actor"
    discrete = False

    def __init__(self, config: PolicyConfig | None = None, *, initialise: bool = True) -> None:
        super().__init__()
        self.config = config or PolicyConfig()
        linear = nn.Linear if initialise else _UninitialisedLinear
        layers: list[nn.Module] = []
        width = self.config.state_dim
        for size in self.config.hidden:
            layers += [linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.mean = linear(width, self.config.action_dim)
        self.log_std = linear(width, self.config.action_dim)

    @property
    def state_dim(self) -> int:
        return self.config.state_dim

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.config.state_dim,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.config.action_dim,)

    def mlp_layers(self) -> MLPLayers:
        """The deterministic path as an MLP: trunk, mean head, tanh."""
        linears = [m for m in self.trunk if isinstance(m, nn.Linear)] + [self.mean]
        return MLPLayers(linears, output="tanh")

    def forward(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clamped log-std of the pre-squash Gaussian."""
        h = self.trunk(state)
        log_std = self.log_std(h).clamp(self.config.log_std_min, self.config.log_std_max)
        return self.mean(h), log_std

    def act(self, state: Tensor, deterministic: bool = True) -> Tensor:
        """An action in [-1, 1]: ``tanh(mean)``, or a sample when not deterministic."""
        mean, log_std = self(state)
        if deterministic:
            return torch.tanh(mean)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean))

    def sample(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterised action and its log-probability (tanh-corrected), for training."""
        mean, log_std = self(state)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        pre = mean + std * noise
        action = torch.tanh(pre)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(u)/du| = 2 * (log 2 - u - softplus(-2u)), numerically stable.
        log_prob -= (2.0 * (LOG_2 - pre - nn.functional.softplus(-2.0 * pre))).sum(-1)
        return action, log_prob

    @classmethod
    def infer_config(cls, state_dict: Mapping[str, Tensor]) -> PolicyConfig:
        """Rebuild the config of a bare ``state_dict`` from its weight shapes."""
        return config_from_shapes({name: tuple(t.shape) for name, t in state_dict.items()})
