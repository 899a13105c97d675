"""What an architecture is: how one name's config is checked and its module built.

:class:`Architecture` pairs a factory with its config's defaults and parser; the registry
(``registry.py``) maps names to them. Nothing here registers anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from common.architectures.config import ArchitectureConfig, check_config_values

__all__ = ["Architecture", "ModelConfig", "UnknownArchitecture", "meta_shapes"]


class ModelConfig(Protocol):
    """A parsed config: what a checkpoint stores of it is :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]: ...


class UnknownArchitecture(KeyError):
    """A name no built-in, entry point or ``register_architecture`` call registered."""


@dataclass(frozen=True, slots=True)
class Architecture:
    """How one architecture is checked and built.

    ``factory`` takes the config as a plain dict (every key present) and returns a fresh
    ``nn.Module``. ``defaults``: the keys it knows, with their values (None: any key, no
    defaults). ``parse`` turns a checked dict into the config (``ValueError``: ``bad_config``);
    ``state_shapes`` names every tensor of the module's state_dict, from the config alone;
    ``build`` makes a module whose every weight is loaded next (it may skip initialising).
    ``complete_configs``: a checkpoint's config must name every key (no defaults filled in),
    as ``sac_actor`` checkpoints always have.
    """

    name: str
    factory: Callable[[dict[str, Any]], nn.Module]
    defaults: Mapping[str, Any] | None = None
    parse: Callable[[Mapping[str, Any]], ModelConfig] | None = None
    state_shapes: Callable[[ModelConfig], dict[str, tuple[int, ...]]] | None = None
    build: Callable[[ModelConfig], nn.Module] | None = None
    complete_configs: bool = False

    def config_of(self, raw: object, *, fill_defaults: bool = True) -> ModelConfig:
        """The config ``raw`` declares: :class:`ConfigError` for an unknown key or a size over
        the caps, ``ValueError`` for a value the architecture refuses."""
        values = check_config_values(raw, self.defaults)
        if fill_defaults and self.defaults is not None:
            values = {**self.defaults, **values}
        if self.parse is not None:
            return self.parse(values)
        return ArchitectureConfig(values)

    def shapes(self, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The name and shape of every tensor a module of ``config`` holds (nothing built)."""
        if self.state_shapes is not None:
            return self.state_shapes(config)
        return meta_shapes(self.factory, config.to_dict())

    def instantiate(self, config: ModelConfig) -> nn.Module:
        """A module of ``config`` whose weights are about to be loaded."""
        if self.build is not None:
            return self.build(config)
        return self.factory(config.to_dict())


def meta_shapes(
    factory: Callable[[dict[str, Any]], nn.Module], config: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of ``factory(config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = factory(config)
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}
