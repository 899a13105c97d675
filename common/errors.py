"""The project's exceptions.

Each carries a short ``reason`` (a metric label and a log word) beside its message::

    FksError
    ├── InvalidNotification   a message that is not a valid CheckpointNotification:
    │                         oversize, not UTF-8, not JSON, not an object, a field of the
    │                         wrong type, a missing/forged signature.  Also a ValueError.
    └── CheckpointError       a checkpoint that will not be served
        ├── CheckpointLoadError   the file cannot be read as a checkpoint: missing,
        │                         not_regular_file, unreadable, too_large, changing,
        │                         truncated, corrupt, compressed_archive, bad_header,
        │                         unsupported_format, unsafe_pickle, foreign_format,
        │                         bad_metadata, bad_config (a config that is not what
    │                         its architecture parses), bad_dtype, bad_layout,
        │                         aliased_storage, sha256_mismatch, and load_error for
        │                         any failure nobody foresaw.
        └── CheckpointRejected    the file loads but is refused: outside the model
                                  roots, too_many_parameters, too_many_layers,
                                  unknown_architecture, invalid_config (an unknown
                                  config key, a size over the caps), non-finite weights, wrong
                                  shape, a failed probe, too_many_activations (one
                                  request row would hold more than
                                  FKS_MAX_ACTIVATION_BYTES).

A ``CheckpointError`` carries the ``identity`` (path, size, mtime, inode, device) of the file
that failed whenever it could be stat-ed, so a caller can remember the failure by the file,
whatever sha256 was announced for it.
"""

from __future__ import annotations

from common.identity import FileIdentity

__all__ = [
    "CheckpointError",
    "CheckpointLoadError",
    "CheckpointRejected",
    "FksError",
    "InvalidNotification",
]


class FksError(Exception):
    """Base of every exception raised on purpose by this project."""

    default_reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class InvalidNotification(FksError, ValueError):
    """A message on the channel (or in ``:latest``) that cannot be accepted."""

    default_reason = "invalid"


class CheckpointError(FksError):
    """A checkpoint that will not be served; the served model stays."""

    default_reason = "checkpoint"

    def __init__(
        self, message: str, *, reason: str | None = None, identity: FileIdentity | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.identity = identity


class CheckpointLoadError(CheckpointError):
    """The file cannot be read as one of our checkpoints."""

    default_reason = "load_failed"


class CheckpointRejected(CheckpointError):
    """The file was read but is refused by policy or by verification."""

    default_reason = "rejected"
