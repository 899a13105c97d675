"""What "the same file" is: the identity a failure is remembered by (path, size, mtime, inode,
device). Beneath :mod:`common.errors`, whose checkpoint errors carry it."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["FileIdentity"]


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
