"""The fields of a loaded checkpoint dict, checked before any is believed.

``save_checkpoint`` writes exact types, so nothing is coerced: a field of the wrong type or
out of range is a :class:`~common.errors.CheckpointLoadError` with reason ``bad_metadata``,
never a bare ``ValueError`` out of ``int()``. ``architecture`` (absent: ``sac_actor``) and
``policy_config`` (its config) are judged by ``common/checkpoint/architecture.py``.

- ``model_name``: str. ``version``, ``training_step``: int (not bool) in ``[0, 2**64)``.
- ``saved_at``: RFC 3339 str (a time without an offset is taken as UTC).
- ``metadata``: dict of str -> str, int, float or bool; values are turned into strings.
- absent (or ``None``): the defaults ``""``, ``0``, ``0``, ``None``, ``{}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from common.errors import CheckpointLoadError
from common.policy import SACActor

if TYPE_CHECKING:
    from common.architectures import ModelConfig

__all__ = ["CHECKPOINT_FORMAT", "SAC_ACTOR", "CheckpointContents", "CheckpointHeader", "interpret"]

CHECKPOINT_FORMAT = "fks.sac_actor"
SAC_ACTOR = "sac_actor"  # the architecture of every checkpoint so far (SPEC §12)
_UINT64_END = 1 << 64


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """What a checkpoint says about itself, beside its weights."""

    model_name: str = ""
    version: int = 0
    training_step: int = 0
    saved_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckpointContents:
    """What a checkpoint holds, whatever its format: what the format seam reads and writes."""

    config: ModelConfig
    state_dict: dict[str, Tensor]
    header: CheckpointHeader = field(default_factory=CheckpointHeader)
    architecture: str = SAC_ACTOR


def interpret(
    target: Path, raw: object
) -> tuple[object, object, dict[str, Tensor], CheckpointHeader]:
    """The architecture and config as written, the state_dict and the header of a
    ``torch.load``-ed checkpoint (or bare state_dict: a ``sac_actor`` of inferred shape)."""
    if not isinstance(raw, dict):
        raise CheckpointLoadError(
            f"{target}: foreign format (a {type(raw).__name__}, not a checkpoint dict)",
            reason="foreign_format",
        )
    if raw.get("format") == CHECKPOINT_FORMAT:
        state_dict = raw.get("state_dict")
        architecture = raw.get("architecture", SAC_ACTOR)
        config = raw.get("policy_config")
        if config is None:
            raise CheckpointLoadError(f"{target}: no policy_config", reason="foreign_format")
        header = _header(target, raw)
    else:
        state_dict, architecture = raw, SAC_ACTOR
        try:
            config = SACActor.infer_config(raw).to_dict()
        except (ValueError, AttributeError, IndexError, TypeError) as exc:
            raise CheckpointLoadError(
                f"{target}: foreign format: {exc}", reason="foreign_format"
            ) from None
        header = CheckpointHeader()
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointLoadError(
            f"{target}: state_dict is not str -> tensor", reason="foreign_format"
        )
    return architecture, config, state_dict, header


def _header(target: Path, raw: dict[object, object]) -> CheckpointHeader:
    name = raw.get("model_name")
    if name is not None and not isinstance(name, str):
        raise _bad(target, f"model_name is a {type(name).__name__}, not a str")
    return CheckpointHeader(
        model_name=name or "",
        version=_counter(target, raw, "version"),
        training_step=_counter(target, raw, "training_step"),
        saved_at=_saved_at(target, raw.get("saved_at")),
        metadata=_metadata(target, raw.get("metadata")),
    )


def _counter(target: Path, raw: dict[object, object], key: str) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value < _UINT64_END:  # bools and floats included
        shown = f"{value!r}" if isinstance(value, bool | float) else f"a {type(value).__name__}"
        raise _bad(target, f"{key} must be an unsigned 64-bit int, got {shown}")
    return value


def _saved_at(target: Path, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(target, f"saved_at is a {type(value).__name__}, not an RFC 3339 str")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(target, f"saved_at {value[:40]!r} is not an RFC 3339 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _metadata(target: Path, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(target, f"metadata is a {type(value).__name__}, not a dict")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str | int | float):
            raise _bad(target, "metadata must map str to str, int, float or bool")
        out[key] = item if isinstance(item, str) else str(item)
    return out


def _bad(target: Path, what: str) -> CheckpointLoadError:
    return CheckpointLoadError(f"{target}: {what}", reason="bad_metadata")
