"""``.pt`` -> ``.safetensors``: the same weights and metadata, without pickle (SPEC §8).

The source is read as any node reads it (``load_checkpoint``: every bound, finite weights),
its tensors are written as they are (dtype and values, no model built in between), atomically,
and the result is read back and compared before it is reported: a conversion that would not
load, or would load as anything else, leaves no file behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.checkpoint import (
    CheckpointContents,
    CheckpointHeader,
    load_checkpoint,
    write_checkpoint,
)
from common.errors import CheckpointLoadError

if TYPE_CHECKING:
    from common.checkpoint import CheckpointLimits, LoadedCheckpoint, SavedCheckpoint

__all__ = ["Converted", "convert_checkpoint", "default_destination"]


@dataclass(frozen=True, slots=True)
class Converted:
    """The checkpoint read and the one written."""

    source: LoadedCheckpoint
    saved: SavedCheckpoint


def default_destination(source: str | os.PathLike[str]) -> Path:
    """``source`` with its suffix replaced by ``.safetensors``."""
    return Path(source).with_suffix(".safetensors")


def convert_checkpoint(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None = None,
    *,
    limits: CheckpointLimits | None = None,
) -> Converted:
    """Rewrite the ``.pt`` checkpoint ``source`` as ``.safetensors`` at ``destination``.

    ``ValueError`` for a destination not named ``.safetensors``; a
    :class:`~common.errors.CheckpointError` for a source that does not load or is not ``.pt``.
    """
    target = Path(destination) if destination is not None else default_destination(source)
    if target.suffix != ".safetensors":
        raise ValueError(f"{target}: the destination must end in .safetensors")
    loaded = load_checkpoint(source, limits=limits)
    if loaded.format != "pt":
        raise CheckpointLoadError(
            f"{source}: already a {loaded.format} checkpoint", reason="foreign_format"
        )
    header = CheckpointHeader(
        loaded.model_name, loaded.version, loaded.training_step, loaded.saved_at, loaded.metadata
    )
    contents = CheckpointContents(loaded.config, loaded.state_dict, header, loaded.architecture)
    saved = write_checkpoint(target, contents)
    try:
        _same(loaded, load_checkpoint(target, expected_sha256=saved.sha256, limits=limits))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Converted(loaded, saved)


def _same(source: LoadedCheckpoint, written: LoadedCheckpoint) -> None:
    fields = ("config", "model_name", "version", "training_step", "saved_at", "metadata")
    differ = [name for name in fields if getattr(source, name) != getattr(written, name)]
    if source.state_dict.keys() != written.state_dict.keys() or any(
        not torch.equal(tensor, written.state_dict[name])
        or tensor.dtype != written.state_dict[name].dtype
        for name, tensor in source.state_dict.items()
    ):
        differ.append("state_dict")
    if differ:
        raise CheckpointLoadError(
            f"{written.path}: reads back with other {', '.join(differ)}", reason="corrupt"
        )
