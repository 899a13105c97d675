"""The architecture registry (SPEC §12): a name -> how to check a config and build a module.

A checkpoint names its architecture and carries its config as plain JSON values; a node builds
only the names registered in its process, so nothing in a checkpoint is ever code:

- the built-ins ``sac_actor`` (``sac.py``, imported as ``common.policy``) and ``dqn``
  (``dqn.py``);
- every entry point of the group ``fks.architectures`` (name -> a factory taking the config,
  or an :class:`Architecture`), loaded once, on the first lookup (a node looks up at start);
- :func:`register_architecture` in-process.

A config is checked before anything is built (``common/architectures/config.py``: JSON values
within caps, no key the architecture does not know). The weights it declares are then counted
from the config alone (a user architecture is built on torch's ``meta`` device for that, which
allocates nothing), so a hostile config never makes a node allocate anything before it is
refused.
"""

from common.architectures.architecture import (
    Architecture,
    ModelConfig,
    UnknownArchitecture,
    meta_shapes,
)
from common.architectures.config import (
    MAX_CONFIG_INT,
    MAX_CONFIG_KEYS,
    MAX_CONFIG_LIST,
    MAX_CONFIG_STR,
    ArchitectureConfig,
    ConfigError,
    check_config_values,
)
from common.architectures.registry import (
    ENTRY_POINT_GROUP,
    architecture_names,
    build_architecture,
    get_architecture,
    load_entry_points,
    register,
    register_architecture,
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
