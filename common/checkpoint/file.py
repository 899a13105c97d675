"""Checkpoint files on disk: read without blocking or past a bound, written atomically.

A FIFO, socket, device or directory is refused (``not_regular_file``) from ``lstat`` before
``open``, and ``open`` itself is ``O_NONBLOCK | O_NOFOLLOW`` with the descriptor ``fstat``-ed
again, so a file swapped in between cannot block or redirect the read either. A file over
``max_bytes`` is refused from its size, before a byte is read (``too_large``); a file whose
size changes while it is read is refused (``changing``), and never read past its size + 1.
Paths arrive resolved (symlinks followed) by the caller: a symlink here is refused. With
``confined`` (the model roots' rule), the file actually opened is checked against it before a
byte is read: its name as the kernel holds it for the descriptor (``/proc/self/fd``), so a
directory swapped for a symlink after the caller resolved the path cannot lead the read
outside the roots (``outside_roots``). A file the kernel cannot name (its path over
``PATH_MAX``) is refused too: resolving the path again instead would judge a string, which a
symlink into a deep enough directory makes say "inside" while the kernel opened a file
outside (proved by a review, 2026-12-08). Where there is no ``/proc``
(:data:`NAMES_OPEN_FILES` false) callers resolve the path again just before the read instead.

:func:`write_atomically` writes tmp -> fsync -> ``os.replace`` -> fsync(dir): a reader sees
the old file or the whole new one, never half of one, and a crash leaves no half file behind
under the target's name.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from common.errors import CheckpointLoadError, CheckpointRejected
from common.identity import FileIdentity

__all__ = [
    "Buffer",
    "FileIdentity",
    "file_identity",
    "read_checkpoint_file",
    "write_atomically",
]

# A checkpoint's bytes: a writable buffer as read from disk, bytes when built in memory.
Buffer = bytes | bytearray

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def file_identity(path: str | os.PathLike[str]) -> FileIdentity:
    """The identity of the regular file at ``path`` (``os.stat``: never opens, never blocks)."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise CheckpointLoadError(f"{name}: no such file", reason="missing") from None
    except OSError as exc:
        raise CheckpointLoadError(f"{name}: cannot stat: {exc}", reason="unreadable") from None
    identity = FileIdentity.of(name, st)
    _require_regular(name, st, identity)
    return identity


def read_checkpoint_file(
    path: str | os.PathLike[str],
    max_bytes: int,
    *,
    confined: Callable[[str], bool] | None = None,
) -> tuple[bytearray, FileIdentity]:
    """All the bytes of the regular file at ``path``, and the identity of what was read;
    with ``confined``, only if the file opened lies where it says yes (module docstring).

    The buffer is writable only so that tensors can be views of it (torch refuses read-only
    memory); nothing writes to it: the sha256 and the tensors describe the same bytes."""
    name = os.fspath(path)
    try:
        before = os.lstat(name)
        _require_regular(name, before, FileIdentity.of(name, before))
        fd = os.open(name, _OPEN_FLAGS)
    except FileNotFoundError:
        raise CheckpointLoadError(f"{name}: no such file", reason="missing") from None
    except OSError as exc:  # ELOOP: swapped for a symlink since the lstat
        raise CheckpointLoadError(f"{name}: cannot open: {exc}", reason="unreadable") from None
    try:
        if confined is not None:
            where = opened_name(fd)
            if where is None or not confined(where):
                shown = "a file the kernel cannot name" if where is None else repr(where)
                raise CheckpointRejected(
                    f"{name}: opened {shown}, not inside the model roots (a path swapped "
                    "since it was resolved?)",
                    reason="outside_roots",
                )
        st = os.fstat(fd)
        identity = FileIdentity.of(name, st)
        _require_regular(name, st, identity)
        if st.st_size > max_bytes:
            raise CheckpointLoadError(
                f"{name}: {st.st_size} bytes, over the {max_bytes} a checkpoint may have",
                reason="too_large",
                identity=identity,
            )
        data = _read_at_most(fd, st.st_size + 1)
    except OSError as exc:
        raise CheckpointLoadError(f"{name}: cannot read: {exc}", reason="unreadable") from None
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise CheckpointLoadError(
            f"{name}: {len(data)} bytes read where fstat said {st.st_size} "
            "(still being written in place?)",
            reason="changing",
            identity=identity,
        )
    return data, identity


_FD_NAMES = "/proc/self/fd"
# whether this system names the file open on a descriptor (Linux's /proc)
NAMES_OPEN_FILES = os.path.isdir(_FD_NAMES)


def opened_name(fd: int) -> str | None:
    """The path of the file open on ``fd`` as the kernel names it (one ``readlink`` of
    ``/proc/self/fd/N``: every symlink and ``..`` was resolved at the open), or None where
    it cannot say (no ``/proc``; a path over ``PATH_MAX``)."""
    try:
        return os.readlink(f"{_FD_NAMES}/{fd}")
    except OSError:
        return None


def _require_regular(name: str, st: os.stat_result, identity: FileIdentity | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise CheckpointLoadError(
            f"{name}: {kind}, not a regular file", reason="not_regular_file", identity=identity
        )


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link (paths are resolved before loading)",
}


def _read_at_most(fd: int, limit: int) -> bytearray:
    """Up to ``limit`` bytes from ``fd`` (two reads for a file that does not grow), into one
    writable buffer: the tensors of a ``.safetensors`` file are views of it
    (``common/checkpoint/safetensors.py``), not copies."""
    data = bytearray(limit)
    total = 0
    with memoryview(data) as view:
        while total < limit:
            count = os.readv(fd, [view[total:]])
            if not count:
                break
            total += count
    del data[total:]
    return data


def write_atomically(target: Path, data: bytes) -> str:
    """Write ``data`` to ``target`` (its directory created if need be); return its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()
