"""Serving side: hold the served model, listen for notifications, fall back to mtime, serve HTTP.

The classes that need torch are imported on first use, so that ``create_app`` still builds a
server (answering 503) when torch cannot be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from subscriber.app import create_app, mount, sac_lifespan

if TYPE_CHECKING:
    from subscriber.holder import ModelHolder
    from subscriber.listener import CheckpointSubscriber
    from subscriber.node import ServingNode
    from subscriber.snapshot import ServedModel

__all__ = [
    "CheckpointSubscriber",
    "ModelHolder",
    "ServedModel",
    "ServingNode",
    "create_app",
    "mount",
    "sac_lifespan",
]

_LAZY = {
    "CheckpointSubscriber": "subscriber.listener",
    "ModelHolder": "subscriber.holder",
    "ServedModel": "subscriber.snapshot",
    "ServingNode": "subscriber.node",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subscriber' has no attribute {name!r}")
