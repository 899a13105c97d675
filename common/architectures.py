"""The architecture registry (SPEC §12): a name -> how to check a config and build a module.

A checkpoint names its architecture and carries its config as plain JSON values; a node builds
only the names registered in its process, so nothing in a checkpoint is ever code:

- the built-ins ``sac_actor`` (``common/policy.py``) and ``dqn`` (``common/dqn.py``);
- every entry point of the group ``fks.architectures`` (name -> a factory taking the config,
  or an :class:`Architecture`), loaded once, on the first lookup (a node looks up at start);
- :func:`register_architecture` in-process.

A config is checked before anything is built (``common/architecture_config.py``: JSON values
within caps, no key the architecture does not know). The weights it declares are then counted
from the config alone (a user architecture is built on torch's ``meta`` device for that, which
allocates nothing), so a hostile config never makes a node allocate anything before it is
refused.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import torch
from torch import nn

from common.architecture_config import (
    MAX_CONFIG_INT,
    MAX_CONFIG_KEYS,
    MAX_CONFIG_LIST,
    MAX_CONFIG_STR,
    ArchitectureConfig,
    ConfigError,
    check_config_values,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_CONFIG_INT",
    "MAX_CONFIG_KEYS",
    "MAX_CONFIG_LIST",
    "MAX_CONFIG_STR",
    "Architecture",
    "ArchitectureConfig",
    "ConfigError",
    "ModelConfig",
    "UnknownArchitecture",
    "architecture_names",
    "build_architecture",
    "check_config_values",
    "get_architecture",
    "load_entry_points",
    "meta_shapes",
    "register",
    "register_architecture",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fks.architectures"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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


_registry: dict[str, Architecture] = {}
_lock = threading.RLock()
_loaded = False


def register(architecture: Architecture) -> None:
    """Add (or replace) ``architecture`` under its name."""
    if not isinstance(architecture.name, str) or not _NAME.fullmatch(architecture.name):
        raise ValueError(f"architecture name {architecture.name!r} is not [A-Za-z0-9_.-]{{1,64}}")
    with _lock:
        _registry[architecture.name] = architecture


def register_architecture(
    name: str,
    factory: Callable[[dict[str, Any]], nn.Module] | Architecture,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Register ``factory`` (config dict -> fresh ``nn.Module``) as ``name`` in this process.

    ``defaults`` lists the config keys the factory knows, with their values: a checkpoint whose
    config names another key is then refused (``invalid_config``). Without it, the factory's
    own attribute ``config_defaults`` is used when present, else any key is accepted (within
    the caps of :func:`check_config_values`).
    """
    _ensure_loaded()
    if isinstance(factory, Architecture):
        from dataclasses import replace

        register(replace(factory, name=name))
        return
    if not callable(factory):
        raise TypeError(f"architecture {name!r}: {factory!r} is not callable")
    known = defaults if defaults is not None else getattr(factory, "config_defaults", None)
    if known is not None:
        known = check_config_values(known, None)
    register(Architecture(name, factory, defaults=known))


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``; :class:`UnknownArchitecture` otherwise."""
    _ensure_loaded()
    found = _registry.get(name)
    if found is None:
        raise UnknownArchitecture(name)
    return found


def architecture_names() -> list[str]:
    """Every registered name, sorted."""
    _ensure_loaded()
    return sorted(_registry)


def build_architecture(name: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A fresh ``nn.Module`` of architecture ``name``; keys absent from ``config`` take their
    defaults. ``UnknownArchitecture`` or ``ValueError`` for what a node would refuse."""
    architecture = get_architecture(name)
    return architecture.factory(architecture.config_of(dict(config or {})).to_dict())


def load_entry_points() -> list[str]:
    """Register every entry point of ``fks.architectures``; the names registered. One that
    fails to import is logged and skipped: a broken plugin never stops a node."""
    names: list[str] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_architecture(point.name, point.load())
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is its own
            log.error("architecture entry point %s = %s failed: %s", point.name, point.value, exc)
            continue
        names.append(point.name)
    if names:
        log.info("architectures from entry points: %s", ", ".join(names))
    return names


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:  # reentrant: registering takes it too
        if _loaded:
            return
        _loaded = True
        from common import builtin_architectures  # noqa: F401 - registers sac_actor and dqn

        load_entry_points()


def meta_shapes(
    factory: Callable[[dict[str, Any]], nn.Module], config: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of ``factory(config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = factory(config)
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}
