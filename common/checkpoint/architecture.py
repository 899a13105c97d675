"""A checkpoint's architecture and config, checked before anything is built (SPEC §12).

Both formats name an architecture (absent: ``sac_actor``) and carry its config as JSON values.
:func:`resolve` refuses, in order:

1. a name this process has not registered (``unknown_architecture``): nothing in a checkpoint
   is code, a node only builds what it was installed with;
2. a config with a key the architecture does not know, or a size over the caps of
   :func:`~common.architectures.check_config_values` (``invalid_config``);
3. a config the architecture's own parser refuses, or one that is not an object of JSON values
   (``bad_config``);
4. more hidden layers or parameters than the limits (``too_many_layers``,
   ``too_many_parameters``), counted from the config alone.

:func:`check_state_shapes` then holds the tensors to the shapes that config declares
(``shape_mismatch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.architectures import (
    Architecture,
    ConfigError,
    ModelConfig,
    UnknownArchitecture,
    architecture_names,
    get_architecture,
)
from common.errors import CheckpointLoadError, CheckpointRejected
from common.limits import CheckpointLimits, check_declared

__all__ = ["Resolved", "check_state_shapes", "resolve"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A registered architecture, the config a checkpoint declares for it, and the shapes
    of the tensors that config needs."""

    architecture: Architecture
    config: ModelConfig
    shapes: dict[str, tuple[int, ...]]


def resolve(target: Path, name: object, raw: object, limits: CheckpointLimits) -> Resolved:
    """The architecture ``name`` with the config ``raw``, within ``limits``; a
    :class:`~common.errors.CheckpointError` with a reason otherwise."""
    if not isinstance(name, str):
        raise CheckpointLoadError(
            f"{target}: architecture is a {type(name).__name__}, not a str", reason="bad_metadata"
        )
    try:
        architecture = get_architecture(name)
    except UnknownArchitecture:
        raise CheckpointRejected(
            f"{target}: architecture {name[:40]!r} is not registered here "
            f"({', '.join(architecture_names())})",
            reason="unknown_architecture",
        ) from None
    try:
        config = architecture.config_of(raw, fill_defaults=not architecture.complete_configs)
    except ConfigError as exc:
        raise CheckpointRejected(
            f"{target}: {name} config: {exc}", reason="invalid_config"
        ) from None
    except (ValueError, TypeError) as exc:
        raise CheckpointLoadError(f"{target}: {name} config: {exc}", reason="bad_config") from None
    try:
        shapes = check_declared(target, architecture, config, limits)
    except CheckpointRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's factory refusing the config, however
        raise CheckpointRejected(
            f"{target}: {name} refuses its config: {str(exc)[:200]}", reason="invalid_config"
        ) from None
    return Resolved(architecture, config, shapes)


def check_state_shapes(
    target: Path, shapes: Mapping[str, Sequence[int]], expected: Mapping[str, tuple[int, ...]]
) -> None:
    """Refuse tensors whose names or shapes are not those the config declares."""
    if {k: tuple(v) for k, v in shapes.items()} == expected:
        return
    missing = sorted(expected.keys() - shapes.keys())
    unexpected = sorted(shapes.keys() - expected.keys())
    wrong = [n for n in expected if n in shapes and tuple(shapes[n]) != expected[n]]
    detail = "; ".join(
        f"{label} {', '.join(repr(n[:80]) for n in names[:4])}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong))
        if names
    )
    raise CheckpointRejected(
        f"{target}: the tensors do not fit the declared config: {detail}",
        reason="shape_mismatch",
    )
