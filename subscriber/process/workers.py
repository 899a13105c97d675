"""``fks serve --workers N``: each uvicorn worker is its own node (SPEC §11).

The supervisor (``fks serve``) creates a directory of slot lock files and names it in
``FKS_WORKER_SLOTS``; each worker takes the lowest free slot with a non-blocking ``flock``
held for its whole life (the kernel releases it when the process dies, so a worker that
uvicorn restarts takes the slot back) and becomes ``<FKS_NODE_ID>-w<slot>``: its own
listener, loads, acks and registry entry. Without the variable (a single process), the node
id is ``FKS_NODE_ID`` or ``<hostname>:<pid>`` as before.

The supervisor also names the number of workers in ``FKS_WORKER_COUNT``: a worker's siblings
are the other slots, which it reaches through the same directory (``siblings.py``)
when an operator's reload or rollback must act on the whole port.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from common.settings import Settings
from subscriber.pipeline.registry import default_node_id

__all__ = [
    "COUNT_ENV", "SLOTS_ENV", "node_id_for", "slots_directory", "worker_count", "worker_node_id",
    "worker_slot",
]  # fmt: skip

SLOTS_ENV = "FKS_WORKER_SLOTS"
COUNT_ENV = "FKS_WORKER_COUNT"
MAX_SLOTS = 256

_claimed: int | None = None
_held: list[int] = []  # the lock's file descriptor, open for the life of the process


def worker_slot() -> int | None:
    """This worker's slot (claimed once per process), or None outside ``--workers``."""
    global _claimed
    directory = os.environ.get(SLOTS_ENV)
    if not directory:
        return None
    if _claimed is None:
        _claimed = _claim(Path(directory))
    return _claimed


def node_id_for(settings: Settings) -> str:
    """The node id: ``FKS_NODE_ID`` (or ``<hostname>:<pid>``), ``-w<slot>`` in a worker."""
    base = settings.node_id or default_node_id()
    slot = worker_slot()
    return base if slot is None else worker_node_id(base, slot)


def worker_node_id(base: str, slot: int) -> str:
    """The node id of the worker in ``slot`` when the node id is ``base``."""
    return f"{base[:120]}-w{slot}"


def slots_directory() -> Path | None:
    """The supervisor's slot directory, or None outside ``--workers``."""
    directory = os.environ.get(SLOTS_ENV)
    return Path(directory) if directory else None


def worker_count() -> int:
    """How many workers the supervisor runs (``FKS_WORKER_COUNT``); without it, the slots
    tried so far (their lock files)."""
    try:
        return max(0, int(os.environ.get(COUNT_ENV, "")))
    except ValueError:
        directory = slots_directory()
        return len(list(directory.glob("slot-*.lock"))) if directory is not None else 0


def _claim(directory: Path) -> int:
    for slot in range(MAX_SLOTS):
        fd = os.open(directory / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        return slot
    raise RuntimeError(f"no free worker slot in {directory} ({MAX_SLOTS} taken)")
