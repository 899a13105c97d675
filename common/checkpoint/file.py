"""Checkpoint files on disk: read without blocking or past a bound, written atomically.

A FIFO, socket, device or directory is refused (``not_regular_file``) from ``lstat`` before
``open``, and ``open`` itself is ``O_NONBLOCK | O_NOFOLLOW`` with the descriptor ``fstat``-ed
again, so a file swapped in between cannot block or redirect the read either. A file over
``max_bytes`` is refused from its size, before a byte is read (``too_large``); a file whose
size changes while it is read is refused (``changing``), and never read past its size + 1.
Paths arrive resolved (symlinks followed) by the caller: a symlink here is refused. With
``beneath`` (the model root the caller confined the path to), the file is reached from that
root's directory one component at a time, each opened ``O_NOFOLLOW`` relative to the one
before (``dir_fd``): the path was resolved, so a symlink on the way can only be one swapped in
since, and it is refused (``outside_roots``). The check is the walk itself, not a name: the
kernel's name for an open file (``/proc/self/fd``) can be made to lie (a file beyond
``PATH_MAX``; a symlink through ``/proc/<pid>/root`` into another mount namespace), and both
were proved to lead a read outside the roots by a review (2026-12-08).

:func:`write_atomically` writes tmp -> fsync -> ``os.replace`` -> fsync(dir): a reader sees
the old file or the whole new one, never half of one, and a crash leaves no half file behind
under the target's name.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
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
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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
    beneath: Path | None = None,
) -> tuple[bytearray, FileIdentity]:
    """All the bytes of the regular file at ``path``, and the identity of what was read;
    with ``beneath``, reached from that directory through real directories only (module
    docstring).

    The buffer is writable only so that tensors can be views of it (torch refuses read-only
    memory); nothing writes to it: the sha256 and the tensors describe the same bytes."""
    name = os.fspath(path)
    fd = _open_beneath(name, beneath) if beneath is not None else _open(name)
    try:
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


def _open(name: str, dir_fd: int | None = None, shown: str | None = None) -> int:
    """``name`` opened for reading if it is a regular file (refused from ``lstat`` first: a
    FIFO never blocks the open, which is ``O_NONBLOCK | O_NOFOLLOW`` besides)."""
    shown = shown or name
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        _require_regular(shown, before, FileIdentity.of(shown, before))
        return os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CheckpointLoadError(f"{shown}: no such file", reason="missing") from None
    except OSError as exc:  # ELOOP: swapped for a symlink since the lstat
        raise CheckpointLoadError(f"{shown}: cannot open: {exc}", reason="unreadable") from None


def _open_beneath(name: str, root: Path) -> int:
    """``name`` (resolved, under ``root``) opened from ``root`` one component at a time, no
    symlink followed on the way."""
    try:
        parts = Path(name).relative_to(root).parts
    except ValueError:
        parts = ()
    if not parts or any(part in ("..", ".") for part in parts):
        raise CheckpointRejected(f"{name}: not under the model root {root}", reason="outside_roots")
    try:
        where = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise CheckpointLoadError(
            f"{name}: cannot open {root}: {exc}", reason="unreadable"
        ) from None
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=where)
            except FileNotFoundError:
                raise CheckpointLoadError(f"{name}: no such file", reason="missing") from None
            except OSError as exc:  # ELOOP, ENOTDIR: a symlink swapped in since it was resolved
                raise CheckpointRejected(
                    f"{name}: {part!r} on the way is no longer a directory ({exc.strerror}): "
                    "a path swapped since it was resolved; not followed out of the model root",
                    reason="outside_roots",
                ) from None
            os.close(where)
            where = inner
        return _open(parts[-1], where, name)
    finally:
        os.close(where)


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
