"""Trainer side: announce checkpoints on Redis."""

from publisher.notifier import CheckpointNotifier, NotifyResult, notify_checkpoint

__all__ = ["CheckpointNotifier", "NotifyResult", "notify_checkpoint"]
