"""What "the same file" is: the identity a failure is remembered by (path, size, mtime, inode,
device), and the sha256 of its bytes. Beneath :mod:`common.errors`, whose checkpoint errors
carry it; imports no torch, so the publisher's side (``fks notify``) starts without it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

__all__ = ["FileIdentity", "file_sha256"]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What "the same file" means for failure memory: path, size, mtime, inode, device."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> FileIdentity:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
