"""Trainer side: announce checkpoints on Redis, wait for the nodes' acks, roll out."""

from publisher.acks import AckReport
from publisher.notifier import CheckpointNotifier, NotifyOptions, NotifyResult, notify_checkpoint

__all__ = [
    "AckReport",
    "CheckpointNotifier",
    "NotifyOptions",
    "NotifyResult",
    "notify_checkpoint",
]
