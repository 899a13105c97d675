"""SPEC §6's import path for the served network and the registry.

``from common.policy import SACActor`` (the built-in ``sac_actor``, ``common/architectures/sac.py``)
and ``from common.policy import build_architecture, register_architecture`` (the registry of
``common/architectures/registry.py``) build any other.
"""

from __future__ import annotations

from common.architectures.registry import build_architecture, register_architecture
from common.architectures.sac import (
    PolicyConfig,
    SACActor,
    config_from_shapes,
    parameter_count,
    state_shapes,
)

__all__ = [
    "PolicyConfig",
    "SACActor",
    "build_architecture",
    "config_from_shapes",
    "parameter_count",
    "register_architecture",
    "state_shapes",
]
