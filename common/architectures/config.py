"""The values of an architecture's config, checked before anything is built (SPEC §12).

A config is a JSON object of at most ``MAX_CONFIG_KEYS`` keys (``[A-Za-z0-9_.-]{1,64}``),
of scalars and flat lists only: each integer within ``MAX_CONFIG_INT``, each list within
``MAX_CONFIG_LIST`` items, each string within ``MAX_CONFIG_STR`` chars, and no key the
architecture does not know (when it declares its keys, as every built-in does).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_CONFIG_INT",
    "MAX_CONFIG_KEYS",
    "MAX_CONFIG_LIST",
    "MAX_CONFIG_STR",
    "ArchitectureConfig",
    "ConfigError",
    "check_config_values",
]

MAX_CONFIG_KEYS = 32
MAX_CONFIG_INT = 1 << 16
MAX_CONFIG_LIST = 256
MAX_CONFIG_STR = 256
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConfigError(ValueError):
    """A config object an architecture refuses: an unknown key or a size over the caps."""


@dataclass(frozen=True, slots=True, eq=False)
class ArchitectureConfig:
    """The config of an architecture registered by a plain factory: checked JSON values."""

    values: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.values.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArchitectureConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def check_config_values(raw: object, known: Mapping[str, Any] | None) -> dict[str, Any]:
    """``raw`` as a dict of JSON scalars and flat lists within the caps.

    :class:`ConfigError` (``invalid_config``) for a key outside ``known`` (when given) or a
    size over the caps; ``ValueError`` (``bad_config``) for what is not such a dict at all.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"the config is a {type(raw).__name__}, not an object")
    if len(raw) > MAX_CONFIG_KEYS:
        raise ConfigError(f"the config has {len(raw)} keys (at most {MAX_CONFIG_KEYS})")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ValueError(f"config key {key!r} is not a string")
        if not _NAME.fullmatch(key):
            raise ConfigError(f"config key {str(key)[:40]!r} is not [A-Za-z0-9_.-]{{1,64}}")
        if known is not None and key not in known:
            raise ConfigError(f"unknown config key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, list | tuple):
            if len(value) > MAX_CONFIG_LIST:
                raise ConfigError(
                    f"config {key!r} lists {len(value)} items (at most {MAX_CONFIG_LIST})"
                )
            out[key] = [_scalar(key, item) for item in value]
        else:
            out[key] = _scalar(key, value)
    return out


def _scalar(key: str, value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_CONFIG_INT:
            shown = str(value) if abs(value) < 10**12 else f"a {value.bit_length()}-bit integer"
            raise ConfigError(f"config {key!r} = {shown} is over {MAX_CONFIG_INT}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config {key!r} is not finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_CONFIG_STR:
            raise ConfigError(f"config {key!r} is a string over {MAX_CONFIG_STR} chars")
        return value
    raise ValueError(f"config {key!r} holds a {type(value).__name__}, not a JSON scalar")
