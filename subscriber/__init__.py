"""Serving side: hold the served model, listen for notifications, fall back to mtime, serve HTTP.

The classes that need torch are imported on first use, so that ``create_app`` still builds a
server (answering 503) when torch cannot be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.moved import alias_moved_modules
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


# The flat layout before the stages (issue 25): ``subscriber.<module>`` still imports, with a
# DeprecationWarning naming the new path.
_STAGES = {
    "web": "app asgi auth benchmark bodyguard deps inputs modelwork predict routes schemas "
    "strictjson",
    "process": "operations siblings workers",
    "pipeline": "acker applier decider fallback listener recorder redis_link registry seen",
    "model": "activations budget events failures holder inference loader model_io module_probe "
    "module_runner numpy_runner plan probe snapshot",
    "fetching": "deadline fetch remote_tier roots transports",
    "runtime": "heap lane memory metrics threads traffic",
}
alias_moved_modules(
    {
        f"subscriber.{module}": f"subscriber.{stage}.{module}"
        for stage, modules in _STAGES.items()
        for module in modules.split()
    }
)
