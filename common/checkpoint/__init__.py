"""Checkpoint files: written atomically, read within bounds, in either format (SPEC §8).

``save_checkpoint`` picks the format by the target's suffix: ``.safetensors`` (tensors, and
everything else as string metadata; no pickle) or ``.pt`` (the ``torch.save`` dict of the first
release). ``load_checkpoint`` reads both, ``.pt`` through ``torch.load(weights_only=True)``
only; ``common/checkpoint/format.py`` says how a file's format is told.

Every truncated, corrupt or tampered file is a :class:`~common.errors.CheckpointLoadError`;
a file that loads but holds non-finite or mis-shaped weights is a
:class:`~common.errors.CheckpointRejected`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from torch import Tensor, nn

from common.architectures import ConfigError, ModelConfig, get_architecture
from common.checkpoint.digest import PARALLEL_BYTES, digest_later, sha256_hex
from common.checkpoint.fields import (
    CHECKPOINT_FORMAT,
    SAC_ACTOR,
    CheckpointContents,
    CheckpointHeader,
)
from common.checkpoint.file import (
    Buffer,
    FileIdentity,
    file_identity,
    read_checkpoint_file,
    write_atomically,
)
from common.checkpoint.format import CheckpointFormat, decode, detect, encode, format_for_path
from common.checkpoint.pt import packed_state_dict
from common.checkpoint.tensors import check_finite
from common.errors import CheckpointError, CheckpointLoadError, CheckpointRejected
from common.identity import file_sha256
from common.limits import CheckpointLimits
from common.policy import SACActor, parameter_count

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointContents",
    "CheckpointFormat",
    "CheckpointHeader",
    "CheckpointLimits",
    "FileIdentity",
    "LoadedCheckpoint",
    "SavedCheckpoint",
    "build_module",
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
    config: ModelConfig
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
    policy: nn.Module,
    *,
    architecture: str | None = None,
    config: Mapping[str, object] | None = None,
    model_name: str = "",
    version: int = 0,
    training_step: int = 0,
    metadata: Mapping[str, object] | None = None,
    saved_at: datetime | None = None,
) -> SavedCheckpoint:
    """Write ``policy`` to ``path`` as tmp -> fsync -> ``os.replace`` -> fsync(dir), in the
    format its suffix names (``.safetensors``; anything else is ``.pt``).

    A reader never sees half a file: it sees the old one or the whole new one.

    ``architecture`` names a registered architecture (default: the module's ``architecture``
    attribute, else ``sac_actor``) and ``config`` its config (default: the module's
    ``config``); the config is checked as a node will check it, and the module's weights must
    have the shapes it declares (``ValueError`` otherwise: nothing is written).
    """
    name, parsed = _architecture_of(policy, architecture, config)
    header = CheckpointHeader(
        model_name=model_name,
        version=int(version),
        training_step=int(training_step),
        saved_at=(saved_at or datetime.now(UTC)).astimezone(UTC),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
    )
    contents = CheckpointContents(parsed, policy.state_dict(), header, name)
    return write_checkpoint(path, contents)


def _architecture_of(
    module: nn.Module, architecture: str | None, config: Mapping[str, object] | None
) -> tuple[str, ModelConfig]:
    name = architecture or getattr(module, "architecture", None) or SAC_ACTOR
    if not isinstance(name, str):
        raise ValueError(f"architecture must be a str, not {type(name).__name__}")
    spec = get_architecture(name)  # UnknownArchitecture (a KeyError) for an unregistered one
    raw = config if config is not None else getattr(module, "config", None)
    if raw is not None and hasattr(raw, "to_dict"):
        raw = raw.to_dict()
    try:
        parsed = spec.config_of(dict(raw or {}))
    except ConfigError as exc:
        raise ValueError(f"{name} config: {exc}") from None
    expected = spec.shapes(parsed)
    actual = {k: tuple(t.shape) for k, t in module.state_dict().items()}
    if actual != expected:
        raise ValueError(f"the module's weights are not those of {name} with config {raw}")
    return name, parsed


def write_checkpoint(path: str | os.PathLike[str], contents: CheckpointContents) -> SavedCheckpoint:
    """Write ``contents`` atomically to ``path``, in the format its suffix names."""
    target = Path(path)
    data = encode(format_for_path(target), contents)
    sha256 = write_atomically(target, data)
    header = contents.header
    when = header.saved_at or datetime.now(UTC)
    return SavedCheckpoint(target, sha256, len(data), when, header.version, header.training_step)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    limits: CheckpointLimits | None = None,
    beneath: Path | None = None,
) -> LoadedCheckpoint:
    """Read, hash and decode one checkpoint (``.pt`` or ``.safetensors``), within ``limits``.

    The bytes are read once, so the hash, the identity and the weights all describe the same
    file even if it is replaced meanwhile. ``path`` is opened as given, without following a
    symlink: callers resolve it first; with ``beneath``, it is reached from that directory
    through real directories only (``outside_roots`` else: ``common/checkpoint/file.py``).
    Every failure is a
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
        data, identity = read_checkpoint_file(target, limits.max_bytes, beneath=beneath)
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
    data: Buffer,
    identity: FileIdentity,
    expected_sha256: str | None,
    limits: CheckpointLimits,
) -> LoadedCheckpoint:
    if len(data) < PARALLEL_BYTES or detect(target, data) != "safetensors":
        sha256 = sha256_hex(data)
        _check_sha256(target, sha256, expected_sha256)
        fmt, contents = decode(target, data, limits)
    else:  # hashed beside the decoding (common/checkpoint/digest.py), checked before return
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
    """An ``eval()``-mode :class:`SACActor` holding ``loaded``'s weights (a ``sac_actor``)."""
    policy = build_module(loaded)
    if not isinstance(policy, SACActor):
        raise CheckpointRejected(
            f"{loaded.path}: a {loaded.architecture}, not a sac_actor", reason="shape_mismatch"
        )
    return policy


def build_module(loaded: LoadedCheckpoint) -> nn.Module:
    """An ``eval()``-mode module of ``loaded``'s architecture holding its weights."""
    try:
        policy = get_architecture(loaded.architecture).instantiate(loaded.config)
    except Exception as exc:  # noqa: BLE001 - a factory's failure is the checkpoint's refusal
        raise CheckpointRejected(
            f"{loaded.path}: {loaded.architecture} could not be built: {str(exc)[:200]}",
            reason="invalid_config",
        ) from exc
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
