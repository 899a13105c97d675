"""The format seam: which format a checkpoint is in, and bytes <-> :class:`CheckpointContents`.

Two formats (SPEC §8): ``pt``, the ``torch.save`` dict of the first release, read through
``torch.load(weights_only=True)`` only (``checkpoint_pt``), and ``safetensors``, which no
pickle ever touches (``checkpoint_safetensors``).

Writing follows the target's suffix: ``.safetensors`` writes safetensors, any other ``.pt``.
Reading looks at the suffix *and* the content (a zip archive or torch's legacy magic for
``pt``; 8 bytes then ``{`` for ``safetensors``):

- ``.safetensors`` is read as safetensors, ``.pt`` as pt; content that is neither is then
  refused by that format's reader (``bad_header``, ``corrupt``);
- any other suffix (``.pth``, ``.bin``, none) is read as its content says (pt if unknown);
- a suffix and a content that disagree (a ``torch.save`` archive named ``.safetensors``, a
  safetensors file named ``.pt``) are refused as ``foreign_format``: a file named safetensors
  never reaches the unpickler, whatever its bytes, and a name never hides what a file is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from common.checkpoint.archive import LEGACY_MAGIC, ZIP_MAGIC
from common.checkpoint.fields import CheckpointContents
from common.checkpoint.file import Buffer
from common.checkpoint.pt import decode_pt, encode_pt
from common.checkpoint.safetensors import decode_safetensors, encode_safetensors
from common.errors import CheckpointLoadError
from common.limits import CheckpointLimits

__all__ = ["SUFFIXES", "CheckpointFormat", "decode", "detect", "encode", "format_for_path"]

CheckpointFormat = Literal["pt", "safetensors"]
SUFFIXES: dict[str, CheckpointFormat] = {".pt": "pt", ".safetensors": "safetensors"}


def format_for_path(path: str | os.PathLike[str]) -> CheckpointFormat:
    """The format a checkpoint written to ``path`` takes: by its suffix, ``pt`` by default."""
    return "safetensors" if Path(path).suffix == ".safetensors" else "pt"


def sniff(data: Buffer) -> CheckpointFormat | None:
    """The format ``data`` looks like, from its first bytes; None if neither."""
    if data.startswith(ZIP_MAGIC) or data.startswith(LEGACY_MAGIC):
        return "pt"
    if data[8:9] == b"{":
        return "safetensors"
    return None


def detect(target: Path, data: Buffer) -> CheckpointFormat:
    """The format to read ``data`` (the bytes of ``target``) as; ``foreign_format`` when its
    name and its content disagree."""
    named, looks = SUFFIXES.get(target.suffix), sniff(data)
    if named is not None and looks is not None and named != looks:
        raise CheckpointLoadError(
            f"{target}: a {looks} checkpoint named {target.suffix}: refused (rename it, or "
            "`fks convert` a .pt)",
            reason="foreign_format",
        )
    return named or looks or "pt"


def decode(
    target: Path, data: Buffer, limits: CheckpointLimits
) -> tuple[CheckpointFormat, CheckpointContents]:
    """The format and contents of the checkpoint ``target`` whose bytes are ``data``."""
    fmt = detect(target, data)
    if fmt == "safetensors":
        return fmt, decode_safetensors(target, data, limits)
    return fmt, decode_pt(target, data, limits)


def encode(fmt: CheckpointFormat, contents: CheckpointContents) -> bytes:
    """The bytes of ``contents`` in ``fmt``."""
    return encode_safetensors(contents) if fmt == "safetensors" else encode_pt(contents)
