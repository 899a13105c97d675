"""Hand-made .safetensors files: a real checkpoint taken apart, edited and put back together."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.checkpoint import save_checkpoint
from common.policy import PolicyConfig, SACActor

SMALL = PolicyConfig(hidden=(8,))


@dataclass
class Parts:
    """A safetensors file as its header (a JSON object) and its data section."""

    header: dict[str, Any]
    data: bytes
    length: int | None = None  # the header length written; None: the true one
    raw_header: bytes | None = field(default=None)  # written verbatim instead of ``header``

    def to_bytes(self) -> bytes:
        raw = self.raw_header
        if raw is None:
            raw = json.dumps(self.header, separators=(",", ":")).encode()
        length = len(raw) if self.length is None else self.length
        return struct.pack("<Q", length) + raw + self.data

    def write(self, path: Path) -> Path:
        path.write_bytes(self.to_bytes())
        return path


def split(data: bytes) -> Parts:
    """The header and data of a well-formed safetensors file."""
    (length,) = struct.unpack_from("<Q", data)
    return Parts(json.loads(data[8 : 8 + length]), data[8 + length :])


def retag(path: Path, architecture: str, config: object) -> Path:
    """Replace the architecture and the config (as JSON) in the ``__metadata__`` of the
    .safetensors file at ``path``, in place; its tensors stay as they are."""
    parts = split(path.read_bytes())
    parts.header["__metadata__"]["architecture"] = architecture
    parts.header["__metadata__"]["config"] = json.dumps(config)
    return parts.write(path)


def saved_parts(
    tmp_path: Path, config: PolicyConfig = SMALL, seed: int = 0, **kwargs: Any
) -> Parts:
    """A real checkpoint of a fresh actor of ``config``, saved as .safetensors, taken apart."""
    import torch

    torch.manual_seed(seed)
    saved = save_checkpoint(tmp_path / f"source_{seed}.safetensors", SACActor(config), **kwargs)
    return split(saved.path.read_bytes())


def tensors(parts: Parts) -> dict[str, dict[str, Any]]:
    """The tensor entries of ``parts`` (everything but ``__metadata__``)."""
    return {k: v for k, v in parts.header.items() if k != "__metadata__"}
