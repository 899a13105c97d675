"""The ``__metadata__`` of a ``.safetensors`` checkpoint: str -> str, every field checked.

Written by :func:`metadata_of`, all strings (safetensors allows nothing else)::

    format          "fks.checkpoint"          the tag: this file is one of ours
    format_version  "1"
    architecture    "sac_actor"               a registered architecture (SPEC §12)
    config          '{"action_dim":1,...}'    its config, JSON
    model_name      "sac_stat_pair"
    version         "42"                      unsigned 64-bit, decimal, no sign or padding
    training_step   "21000"                   likewise
    saved_at        "2026-05-01T12:00:00Z"    RFC 3339 (absent: unknown)
    metadata        '{"loss":"0.12"}'         JSON object of str -> str

Read back strictly by :func:`read_metadata`: nothing is coerced, a value that is not a
string or a key nobody writes is refused, and every failure is a
:class:`~common.errors.CheckpointError` with a reason: ``bad_metadata`` (``bad_config`` for
``config`` that is not JSON), ``unsupported_format`` for another ``format_version``; the
architecture and its config are then judged by ``common/checkpoint/architecture.py``
(``unknown_architecture``, ``invalid_config``, ``bad_config``).

A file without the tag (no ``__metadata__``, or one another tool wrote, such as
``{"format": "pt"}``) is a bare state_dict, as ``torch.save(actor.state_dict())`` is for
``.pt``: its config is inferred from its shapes and nothing of its metadata is believed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from common.checkpoint.fields import SAC_ACTOR, CheckpointContents, CheckpointHeader
from common.errors import CheckpointLoadError
from common.policy import config_from_shapes
from common.textsafe import holds_lone_surrogate

__all__ = ["FORMAT_TAG", "FORMAT_VERSION", "metadata_of", "read_metadata", "strict_json"]

FORMAT_TAG = "fks.checkpoint"
FORMAT_VERSION = "1"
_REQUIRED = ("format", "format_version", "architecture", "config")
_OPTIONAL = ("model_name", "version", "training_step", "saved_at", "metadata")
_COUNTER = re.compile(r"0|[1-9][0-9]{0,19}")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def metadata_of(contents: CheckpointContents) -> dict[str, str]:
    """The ``__metadata__`` that carries ``contents`` beside its tensors."""
    header = contents.header
    out = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "architecture": contents.architecture,
        "config": _dumps(contents.config.to_dict()),
        "model_name": header.model_name,
        "version": str(header.version),
        "training_step": str(header.training_step),
        "metadata": _dumps(dict(header.metadata)),
    }
    if header.saved_at is not None:
        out["saved_at"] = header.saved_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def read_metadata(
    target: Path, metadata: object, shapes: Mapping[str, Sequence[int]]
) -> tuple[str, object, CheckpointHeader]:
    """The architecture, config (parsed JSON, not yet judged) and header ``metadata``
    declares (a ``sac_actor`` config inferred from ``shapes`` for a file without the tag)."""
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad(target, f"__metadata__ is a {type(metadata).__name__}, not an object")
    fields: dict[str, object] = metadata or {}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise _bad(target, f"__metadata__ field {key[:40]!r} is not a string")
    text: dict[str, str] = {k: v for k, v in fields.items() if isinstance(v, str)}
    if text.get("format") != FORMAT_TAG:
        ours = set(text) & set(_REQUIRED[1:] + _OPTIONAL)
        if ours:
            raise _bad(target, f"fields {sorted(ours)} without the {FORMAT_TAG!r} format tag")
        return SAC_ACTOR, _inferred(target, shapes), CheckpointHeader()
    unknown = [key for key in text if key not in _REQUIRED and key not in _OPTIONAL]
    if unknown:
        raise _bad(target, f"unknown __metadata__ field {unknown[0][:40]!r}")
    missing = [key for key in _REQUIRED if key not in text]
    if missing:
        raise _bad(target, f"__metadata__ lacks {', '.join(missing)}")
    if text["format_version"] != FORMAT_VERSION:
        raise CheckpointLoadError(
            f"{target}: format_version {text['format_version'][:20]!r} is not read here "
            f"(this node reads {FORMAT_VERSION})",
            reason="unsupported_format",
        )
    header = CheckpointHeader(
        model_name=text.get("model_name", ""),
        version=_counter(target, text, "version"),
        training_step=_counter(target, text, "training_step"),
        saved_at=_saved_at(target, text.get("saved_at")),
        metadata=_user_metadata(target, text.get("metadata")),
    )
    return text["architecture"], _config(target, text["config"]), header


def strict_json(text: str | bytes) -> object:
    """``json.loads`` that refuses what a lenient reader would guess at: duplicate keys,
    ``NaN``/``Infinity``, a lone UTF-16 surrogate escape (``"\\ud800"``: Python reads it,
    the safetensors Rust parser does not, and it cannot be encoded); ``ValueError`` on
    anything it refuses (deep nesting included)."""
    try:
        parsed = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if holds_lone_surrogate(parsed):
        raise ValueError("a string holds a lone UTF-16 surrogate escape")
    return parsed


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate keys in a JSON object")
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _inferred(target: Path, shapes: Mapping[str, Sequence[int]]) -> dict[str, object]:
    try:
        return config_from_shapes(shapes).to_dict()
    except ValueError as exc:
        raise CheckpointLoadError(
            f"{target}: foreign format: {exc}", reason="foreign_format"
        ) from None


def _config(target: Path, text: str) -> object:
    try:
        return strict_json(text)
    except ValueError as exc:
        raise CheckpointLoadError(f"{target}: config: {exc}", reason="bad_config") from None


def _counter(target: Path, text: Mapping[str, str], key: str) -> int:
    value = text.get(key, "0")
    if not _COUNTER.fullmatch(value) or int(value) >= 1 << 64:
        raise _bad(target, f"{key} must be an unsigned 64-bit decimal, got {value[:30]!r}")
    return int(value)


def _saved_at(target: Path, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        if not _RFC3339.fullmatch(value):
            raise ValueError
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise _bad(target, f"saved_at {value[:40]!r} is not an RFC 3339 time") from None


def _user_metadata(target: Path, value: str | None) -> dict[str, str]:
    if value is None:
        return {}
    try:
        parsed = strict_json(value)
    except ValueError as exc:
        raise _bad(target, f"metadata is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise _bad(target, "metadata must be a JSON object of str -> str")
    return parsed


def _bad(target: Path, what: str) -> CheckpointLoadError:
    return CheckpointLoadError(f"{target}: {what}", reason="bad_metadata")
