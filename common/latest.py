"""The rule that moves ``:latest``: the one notification a (re)subscribing node catches up on.

``:latest`` holds the latest *decision* of the fleet. A message moves it when

- nothing is held yet, or the held message is unversioned;
- it is forced (an operator's decision, e.g. a rollback, is the latest by definition);
- it is versioned above the held version.

An unversioned, unforced message does not move a versioned ``:latest`` by itself (the two
cannot be ordered without the files); the nodes that apply it record it there, see
``subscriber/recorder.py``. An equal version never moves it: one version names one
checkpoint, and the publisher refuses a second checkpoint under a version already held.

The publisher's Lua script (``common/redis_scripts.py``) applies the same rule inside Redis;
nodes mirror it to know what ``:latest`` held before each message they receive.
"""

from __future__ import annotations

from common.notification import CheckpointNotification

__all__ = ["moves_latest"]


def moves_latest(held: CheckpointNotification | None, new: CheckpointNotification) -> bool:
    """Whether publishing ``new`` replaces ``held`` as ``:latest``."""
    if held is None or new.force or held.version == 0:
        return True
    return new.version > held.version
