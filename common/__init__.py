"""Shared pieces: the wire schema, Redis key names, settings, signing, checkpoint files.

``common`` imports nothing else of this project.
"""

from common.errors import (
    CheckpointError,
    CheckpointLoadError,
    CheckpointRejected,
    FksError,
    InvalidNotification,
)
from common.keys import RedisKeys, checkpoint_channel, validate_instance_id
from common.moved import alias_moved_modules
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification
from common.settings import Settings
from common.staleness import Freshness, ServedIdentity, judge

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CheckpointError",
    "CheckpointLoadError",
    "CheckpointNotification",
    "CheckpointRejected",
    "FksError",
    "Freshness",
    "InvalidNotification",
    "RedisKeys",
    "ServedIdentity",
    "Settings",
    "checkpoint_channel",
    "judge",
    "validate_instance_id",
]

# Modules that moved into packages (issue 25): the old paths still import, with a
# DeprecationWarning naming the new one.
alias_moved_modules(
    {
        **{
            f"common.checkpoint_{name}": f"common.checkpoint.{name}"
            for name in "archive architecture convert digest fields file format metadata pt "
            "safetensors tensors".split()
        },
        "common.checkpoint_pickle": "common.checkpoint.pickled",
        "common.checkpoint_limits": "common.limits",
        "common.architecture_config": "common.architectures.config",
        "common.builtin_architectures": "common.architectures.builtin",
        "common.dqn": "common.architectures.dqn",
        "common.mlp": "common.architectures.mlp",
        "common.redis_connect": "common.redis_io.connect",
        "common.redis_url": "common.redis_io.url",
        "common.redis_scripts": "common.redis_io.scripts",
        "common.clock": "common.redis_io.clock",
    }
)
