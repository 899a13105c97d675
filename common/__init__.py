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
