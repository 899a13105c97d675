"""Serving side: hold the served model, listen for notifications, fall back to mtime, serve HTTP.

The classes that need torch are imported on first use, so that ``create_app`` still builds a
server (answering 503) when torch cannot be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from subscriber.web.app import create_app, mount, sac_lifespan

if TYPE_CHECKING:
    from subscriber.model.holder import ModelHolder
    from subscriber.model.snapshot import ServedModel
    from subscriber.node import ServingNode
    from subscriber.pipeline.listener import CheckpointSubscriber

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
    "CheckpointSubscriber": "subscriber.pipeline.listener",
    "ModelHolder": "subscriber.model.holder",
    "ServedModel": "subscriber.model.snapshot",
    "ServingNode": "subscriber.node",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subscriber' has no attribute {name!r}")
