"""Checkpoint files: written atomically, read within bounds, in either format (SPEC §8).

``save_checkpoint`` picks the format by the target's suffix: ``.safetensors`` (tensors, and
everything else as string metadata; no pickle) or ``.pt`` (the ``torch.save`` dict of the first
release). ``load_checkpoint`` reads both, ``.pt`` through ``torch.load(weights_only=True)``
only; ``common/checkpoint_format.py`` says how a file's format is told.

Every truncated, corrupt or tampered file is a :class:`~common.errors.CheckpointLoadError`;
a file that loads but holds non-finite or mis-shaped weights is a
:class:`~common.errors.CheckpointRejected`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from torch import Tensor

from common.checkpoint_digest import PARALLEL_BYTES, digest_later, sha256_hex
from common.checkpoint_fields import (
    CHECKPOINT_FORMAT,
    SAC_ACTOR,
    CheckpointContents,
    CheckpointHeader,
)
from common.checkpoint_file import (
    FileIdentity,
    file_identity,
    read_checkpoint_file,
    write_atomically,
)
from common.checkpoint_format import CheckpointFormat, decode, detect, encode, format_for_path
from common.checkpoint_limits import CheckpointLimits
from common.checkpoint_pt import packed_state_dict
from common.checkpoint_tensors import check_finite
from common.errors import CheckpointError, CheckpointLoadError, CheckpointRejected
from common.policy import PolicyConfig, SACActor, parameter_count

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointContents",
    "CheckpointFormat",
    "CheckpointHeader",
    "CheckpointLimits",
    "FileIdentity",
    "LoadedCheckpoint",
    "SavedCheckpoint",
    "build_policy",
    "file_identity",
    "file_sha256",
    "load_checkpoint",
    "packed_state_dict",
    "parameter_count",
    "save_checkpoint",
    "write_checkpoint",
]


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    """Where a checkpoint was written and what it hashes to."""

    path: Path
    sha256: str
    size: int
    saved_at: datetime
    version: int = 0
    training_step: int = 0


@dataclass(frozen=True, slots=True)
class LoadedCheckpoint:
    """A verified checkpoint, read from one open of the file."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int
    config: PolicyConfig
    state_dict: dict[str, Tensor]
    model_name: str = ""
    version: int = 0
    training_step: int = 0
    saved_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    identity: FileIdentity = field(kw_only=True)
    format: CheckpointFormat = field(default="pt", kw_only=True)
    architecture: str = field(default=SAC_ACTOR, kw_only=True)


def save_checkpoint(
    path: str | os.PathLike[str],
    policy: SACActor,
    *,
    model_name: str = "",
    version: int = 0,
    training_step: int = 0,
    metadata: Mapping[str, object] | None = None,
    saved_at: datetime | None = None,
) -> SavedCheckpoint:
    """Write ``policy`` to ``path`` as tmp -> fsync -> ``os.replace`` -> fsync(dir), in the
    format its suffix names (``.safetensors``; anything else is ``.pt``).

    A reader never sees half a file: it sees the old one or the whole new one.
    """
    header = CheckpointHeader(
        model_name=model_name,
        version=int(version),
        training_step=int(training_step),
        saved_at=(saved_at or datetime.now(UTC)).astimezone(UTC),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
    )
    return write_checkpoint(path, CheckpointContents(policy.config, policy.state_dict(), header))


def write_checkpoint(path: str | os.PathLike[str], contents: CheckpointContents) -> SavedCheckpoint:
    """Write ``contents`` atomically to ``path``, in the format its suffix names."""
    target = Path(path)
    data = encode(format_for_path(target), contents)
    sha256 = write_atomically(target, data)
    header = contents.header
    when = header.saved_at or datetime.now(UTC)
    return SavedCheckpoint(target, sha256, len(data), when, header.version, header.training_step)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    limits: CheckpointLimits | None = None,
) -> LoadedCheckpoint:
    """Read, hash and decode one checkpoint (``.pt`` or ``.safetensors``), within ``limits``.

    The bytes are read once, so the hash, the identity and the weights all describe the same
    file even if it is replaced meanwhile. ``path`` is opened as given, without following a
    symlink: callers resolve it first. Every failure is a
    :class:`~common.errors.CheckpointError` with a reason, carrying the file's identity once
    it could be stat-ed; one nobody foresaw is a ``CheckpointLoadError`` with reason
    ``load_error`` naming the exception's type. The checks, in order, are described in the
    modules ``common/checkpoint_{file,format}.py`` and, for ``.pt``,
    ``common/checkpoint_{archive,pickle,fields,limits,tensors}.py``; for ``.safetensors``,
    ``common/checkpoint_{safetensors,metadata}.py``.
    """
    target = Path(path)
    identity: FileIdentity | None = None
    try:
        limits = limits or CheckpointLimits()
        data, identity = read_checkpoint_file(target, limits.max_bytes)
        return _believe(target, data, identity, expected_sha256, limits)
    except CheckpointError as exc:
        exc.identity = exc.identity or identity
        raise
    except Exception as exc:  # noqa: BLE001 - defence in depth: nothing else may escape
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointLoadError(
            f"{target}: unexpected {type(exc).__name__} while loading: {first}",
            reason="load_error",
            identity=identity,
        ) from exc


def _believe(
    target: Path,
    data: bytes,
    identity: FileIdentity,
    expected_sha256: str | None,
    limits: CheckpointLimits,
) -> LoadedCheckpoint:
    if len(data) < PARALLEL_BYTES or detect(target, data) != "safetensors":
        sha256 = sha256_hex(data)
        _check_sha256(target, sha256, expected_sha256)
        fmt, contents = decode(target, data, limits)
    else:  # hashed beside the decoding (common/checkpoint_digest.py), checked before return
        pending = digest_later(data)
        try:
            fmt, contents = decode(target, data, limits)
        finally:
            sha256 = pending.result()
            _check_sha256(target, sha256, expected_sha256)  # a mismatch is the reason given
    check_finite(target, contents.state_dict)
    header = contents.header
    return LoadedCheckpoint(
        path=target,
        sha256=sha256,
        size=len(data),
        mtime_ns=identity.mtime_ns,
        config=contents.config,
        state_dict=contents.state_dict,
        model_name=header.model_name,
        version=header.version,
        training_step=header.training_step,
        saved_at=header.saved_at,
        metadata=header.metadata,
        identity=identity,
        format=fmt,
        architecture=contents.architecture,
    )


def _check_sha256(target: Path, sha256: str, expected: str | None) -> None:
    if expected is not None and sha256 != expected.lower():
        raise CheckpointLoadError(
            f"{target}: sha256 {sha256} does not match the announced {expected.lower()}",
            reason="sha256_mismatch",
        )


def build_policy(loaded: LoadedCheckpoint) -> SACActor:
    """An ``eval()``-mode :class:`SACActor` holding ``loaded``'s weights."""
    policy = SACActor(loaded.config, initialise=False)  # strict loading overwrites every weight
    try:
        policy.load_state_dict(loaded.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointRejected(
            f"{loaded.path}: weights do not fit the declared shape: {detail}",
            reason="shape_mismatch",
        ) from None
    policy.eval()
    policy.requires_grad_(False)
    return policy
