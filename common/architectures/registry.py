"""The registry: architecture name -> :class:`Architecture`, in this process.

The built-ins (``builtin.py``) and every entry point of ``fks.architectures`` are registered
on the first lookup; :func:`register_architecture` adds one in-process."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from common.architectures.architecture import Architecture, UnknownArchitecture
from common.architectures.builtin import BUILTIN_ARCHITECTURES
from common.architectures.config import check_config_values

__all__ = [
    "ENTRY_POINT_GROUP",
    "architecture_names",
    "build_architecture",
    "get_architecture",
    "load_entry_points",
    "register",
    "register_architecture",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fks.architectures"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

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
        for builtin in BUILTIN_ARCHITECTURES:
            register(builtin)

        load_entry_points()
