"""TEMPORARY stand-in for the checkpoint-bounds branch (FileIdentity, file_identity)."""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass

from common.errors import CheckpointLoadError

__all__ = ["FileIdentity", "file_identity"]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int


def file_identity(path: str | os.PathLike[str]) -> FileIdentity:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointLoadError(f"{os.fspath(path)}: no such file", reason="missing") from None
    except OSError as exc:
        raise CheckpointLoadError(f"{os.fspath(path)}: {exc}", reason="unreadable") from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise CheckpointLoadError(
            f"{os.fspath(path)}: not a regular file", reason="not_regular_file"
        )
    return FileIdentity(os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
