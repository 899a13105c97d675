"""Every Redis key and channel name of the project, built in this one place (SPEC §3).

No other module writes an ``fks:`` string: they ask :class:`RedisKeys` for it.

In a Redis Cluster (``redis+cluster://``, SPEC §10) the keys of an instance carry the channel
name as their hash tag: ``{fks:<instance>:model_checkpoints}:latest``, ``…:version``,
``…:nodes``, ``…:blob:<sha256>``, ``…:blobs``. They all live in the channel's own slot, so
each Lua script call touches one slot and may ``SPUBLISH`` (sharded pub/sub) from inside the
script. The channel keeps its name, ``fks:<instance>:model_checkpoints``, in every mode:
operators and other readers subscribe to it as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "EPOCH_BYTES",
    "INSTANCE_ID_PATTERN",
    "NODE_ID_PATTERN",
    "RedisKeys",
    "checkpoint_channel",
    "validate_instance_id",
    "validate_node_id",
]

KEY_PREFIX = "fks"
INSTANCE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A serving node's id (``FKS_NODE_ID``, default ``<hostname>:<pid>``): what a targeted
# message names in ``nodes`` (SPEC §11).
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
# How much of ``:epoch`` a node reads (its own tokens are 16 hex digits): a huge value put
# there by a Redis writer is never copied out on each heartbeat (the catch-up and RESTORE
# read as much).
EPOCH_BYTES = 64


def validate_instance_id(instance_id: object) -> str:
    """Return ``instance_id`` unchanged, or raise ``ValueError`` if it cannot name a channel."""
    if not isinstance(instance_id, str) or not INSTANCE_ID_PATTERN.fullmatch(instance_id):
        raise ValueError(
            f"invalid instance_id {instance_id!r}: expected 1 to 64 characters of [A-Za-z0-9_.-]"
        )
    return instance_id


def validate_node_id(node_id: object) -> str:
    """Return ``node_id`` unchanged, or raise ``ValueError`` if it cannot name a node."""
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
        shown = node_id[:40] + "..." if isinstance(node_id, str) and len(node_id) > 40 else node_id
        raise ValueError(
            f"invalid node id {shown!r}: expected 1 to 128 characters of [A-Za-z0-9_.:@-]"
        )
    return node_id


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The channel and keys of one instance, all under ``fks:{instance_id}:``, named once when
    the instance is given (the names are neither compared nor shown: they follow from it)."""

    instance_id: str
    hash_tag: bool = False  # True in a Redis Cluster: every key in the channel's slot
    channel: str = field(init=False, repr=False, compare=False)
    """Pub/sub channel carrying the notifications (never hash-tagged)."""
    prefix: str = field(init=False, repr=False, compare=False)
    """What the instance's other keys start with (``{<channel>}`` in a cluster)."""
    latest: str = field(init=False, repr=False, compare=False)
    """String key: the last notification (JSON), read after every (re)subscribe."""
    version: str = field(init=False, repr=False, compare=False)
    """Integer key: the version counter, ``INCR``-ed when a caller gives no version."""
    epoch: str = field(init=False, repr=False, compare=False)
    """String key: a token a node sets when it finds none; gone or changed, it tells a
    reconnecting node that Redis lost this instance's data since it last looked."""
    nodes: str = field(init=False, repr=False, compare=False)
    """Hash: serving node id -> JSON of what that node serves."""
    acks: str = field(init=False, repr=False, compare=False)
    """Pub/sub channel: one JSON ack per notification a node judged (SPEC §11)."""
    blob_prefix: str = field(init=False, repr=False, compare=False)
    """What every blob key starts with (the blob script builds the keys it evicts)."""
    blobs: str = field(init=False, repr=False, compare=False)
    """Sorted set: the sha256 of every stored blob, scored by when it was stored (the
    publisher keeps the newest ``FKS_BLOB_KEEP``)."""

    def __post_init__(self) -> None:
        validate_instance_id(self.instance_id)
        channel = f"{KEY_PREFIX}:{self.instance_id}:model_checkpoints"
        # the keys of the checkpoints themselves, and the others', in the channel's slot
        checkpoints = f"{{{channel}}}" if self.hash_tag else channel
        prefix = f"{{{channel}}}" if self.hash_tag else f"{KEY_PREFIX}:{self.instance_id}"
        names = {
            "channel": channel,
            "prefix": prefix,
            "latest": f"{checkpoints}:latest",
            "version": f"{checkpoints}:version",
            "epoch": f"{checkpoints}:epoch",
            "nodes": f"{prefix}:nodes",
            "acks": f"{prefix}:acks",
            "blob_prefix": f"{prefix}:blob:",
            "blobs": f"{prefix}:blobs",
        }
        for name, value in names.items():
            object.__setattr__(self, name, value)

    def blob(self, sha256: str) -> str:
        """String key: a checkpoint's bytes, named by their sha256 (``redis-blob:<sha256>``)."""
        if len(sha256) != 64 or any(ch not in "0123456789abcdef" for ch in sha256):
            raise ValueError(f"a blob is named by 64 lowercase hex characters, got {sha256!r}")
        return self.blob_prefix + sha256


def checkpoint_channel(instance_id: str = "default") -> str:
    """Name of the pub/sub channel of ``instance_id``: ``fks:{instance_id}:model_checkpoints``."""
    return RedisKeys(instance_id).channel
