"""Trainer side: announce checkpoints on Redis, wait for the nodes' acks, roll out."""

from publisher.acks import AckReport
from publisher.notifier import CheckpointNotifier, NotifyResult, notify_checkpoint

__all__ = ["AckReport", "CheckpointNotifier", "NotifyResult", "notify_checkpoint"]
