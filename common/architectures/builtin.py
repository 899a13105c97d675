"""The built-in architectures, registered by the registry on its first lookup: ``sac_actor`` (the
continuous SAC actor of ``sac.py``) and ``dqn`` (``common/architectures/dqn.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from common.architectures.architecture import Architecture, ModelConfig
from common.architectures.dqn import DQN, DQN_DEFAULTS, DQNConfig
from common.architectures.sac import PolicyConfig, SACActor, state_shapes

__all__ = ["BUILTIN_ARCHITECTURES", "DQN_ARCHITECTURE", "SAC_ACTOR_ARCHITECTURE"]


def _policy_config(config: ModelConfig) -> PolicyConfig:
    if not isinstance(config, PolicyConfig):
        raise TypeError(f"sac_actor takes a PolicyConfig, not a {type(config).__name__}")
    return config


def _dqn_config(config: ModelConfig) -> DQNConfig:
    if not isinstance(config, DQNConfig):
        raise TypeError(f"dqn takes a DQNConfig, not a {type(config).__name__}")
    return config


def _sac_actor(config: dict[str, Any]) -> nn.Module:
    return SACActor(PolicyConfig.from_dict(config))


def _dqn(config: dict[str, Any]) -> nn.Module:
    return DQN(DQNConfig.from_dict(config))


def _parse_dqn(values: Mapping[str, Any]) -> ModelConfig:
    return DQNConfig.from_dict(values)


SAC_ACTOR_ARCHITECTURE = Architecture(
    "sac_actor",
    _sac_actor,
    defaults=PolicyConfig().to_dict(),
    parse=PolicyConfig.from_dict,
    state_shapes=lambda config: state_shapes(_policy_config(config)),
    build=lambda config: SACActor(_policy_config(config), initialise=False),
    complete_configs=True,
)
DQN_ARCHITECTURE = Architecture(
    "dqn",
    _dqn,
    defaults=DQN_DEFAULTS,
    parse=_parse_dqn,
    build=lambda config: DQN(_dqn_config(config)),
)

BUILTIN_ARCHITECTURES = (SAC_ACTOR_ARCHITECTURE, DQN_ARCHITECTURE)
