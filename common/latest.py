"""The rule that moves ``:latest``: the one notification a (re)subscribing node catches up on.

``:latest`` holds the latest *decision* of the fleet. A message moves it when

- it is forced (an operator's decision, e.g. a rollback, is the latest by definition);
- it is versioned above the held version, or, when the held message is unversioned or
  there is none (a new instance, or Redis lost it), above every version issued before this
  message (the ``:version`` counter): the same rule the nodes apply with the highest version
  they know (``common/staleness.py``);
- it is unversioned and the held one is unversioned or absent.

An unversioned, unforced message does not move a versioned ``:latest`` by itself (the two
cannot be ordered without the files); the nodes that apply it record it there, see
``subscriber/pipeline/recorder.py``. An equal version never moves it: one version names one
checkpoint, and the publisher refuses a second checkpoint under a version already held.

The publisher's Lua script (``common/redis_io/scripts.py``) applies the same rule inside Redis;
nodes mirror it to know what ``:latest`` held before each message they receive.
"""

from __future__ import annotations

from common.notification import CheckpointNotification

__all__ = ["moves_latest"]


def moves_latest(
    held: CheckpointNotification | None, new: CheckpointNotification, counter: int = 0
) -> bool:
    """Whether publishing ``new`` replaces ``held`` as ``:latest``; ``counter`` is the
    highest version issued before ``new``."""
    if new.force:
        return True
    if held is None or held.version == 0:
        return new.version == 0 or new.version > counter
    return new.version > held.version
