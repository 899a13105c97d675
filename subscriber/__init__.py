"""Serving side: hold the served model, listen for notifications, fall back to mtime."""

from subscriber.holder import ModelHolder
from subscriber.listener import CheckpointSubscriber
from subscriber.node import ServingNode
from subscriber.snapshot import ServedModel

__all__ = ["CheckpointSubscriber", "ModelHolder", "ServedModel", "ServingNode"]
