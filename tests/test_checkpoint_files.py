"""Reading a checkpoint file never blocks, never reads past its bound, and says what it read."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from common import CheckpointError, CheckpointLoadError
from common.checkpoint import (
    CheckpointLimits,
    FileIdentity,
    file_identity,
    load_checkpoint,
    save_checkpoint,
)
from common.policy import SACActor
from tests.process_stats import bytes_read


def load_in_thread(path: Path, timeout: float = 5.0) -> BaseException | None:
    """load_checkpoint(path) on a daemon thread; fails the test if it has not returned in time."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load_checkpoint(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"load_checkpoint({path}) still blocked after {timeout} s"
    return outcome[0]


def test_a_fifo_is_refused_at_once_instead_of_blocking_the_loader(tmp_path: Path) -> None:
    """A FIFO (no writer) in a model root is refused as not_regular_file within moments."""
    fifo = tmp_path / "model_fifo.pt"
    os.mkfifo(fifo)
    error = load_in_thread(fifo)
    assert isinstance(error, CheckpointLoadError) and error.reason == "not_regular_file"
    assert "FIFO" in str(error) and error.identity is not None
    with pytest.raises(CheckpointLoadError) as info:
        file_identity(fifo)
    assert info.value.reason == "not_regular_file"


def test_a_directory_and_a_socket_are_refused(tmp_path: Path) -> None:
    """Neither a directory nor a Unix socket is opened as a checkpoint."""
    (tmp_path / "adir.pt").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.pt"))
    try:
        for name in ("adir.pt", "s.pt"):
            error = load_in_thread(tmp_path / name)
            assert isinstance(error, CheckpointLoadError) and error.reason == "not_regular_file"
    finally:
        sock.close()


def test_a_symlink_to_dev_zero_is_refused_as_a_link_and_as_a_device(tmp_path: Path) -> None:
    """The link itself (paths come resolved) and its target /dev/zero are both refused."""
    link = tmp_path / "zero.pt"
    link.symlink_to("/dev/zero")
    for path in (link, link.resolve()):
        error = load_in_thread(path)
        assert isinstance(error, CheckpointLoadError) and error.reason == "not_regular_file"
    with pytest.raises(CheckpointLoadError) as info:
        file_identity(link)
    assert info.value.reason == "not_regular_file" and "character device" in str(info.value)


def test_a_sparse_file_over_the_limit_is_refused_from_its_size_without_a_read(
    tmp_path: Path,
) -> None:
    """A 3 GiB sparse file is too_large at the default 1 GiB limit, and none of it is read."""
    big = tmp_path / "model_big.pt"
    with open(big, "wb") as fh:
        fh.truncate(3 << 30)
    before = bytes_read()
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(big)
    assert info.value.reason == "too_large"
    assert info.value.identity == file_identity(big)
    assert bytes_read() - before < 1 << 20


def test_the_byte_limit_is_the_file_size_allowed(tmp_path: Path) -> None:
    """A checkpoint of exactly max_bytes loads; one byte less of limit refuses it."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    assert load_checkpoint(saved.path, limits=CheckpointLimits(max_bytes=saved.size)).version == 0
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(saved.path, limits=CheckpointLimits(max_bytes=saved.size - 1))
    assert info.value.reason == "too_large"


def test_a_file_that_grows_after_its_size_was_taken_is_refused_and_not_read_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appended to between fstat and read: refused as changing, one byte past its size read."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    real_fstat = os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        with open(saved.path, "ab") as fh:
            fh.write(b"\0" * (64 << 20))
        return result

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    before = bytes_read()
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(saved.path)
    monkeypatch.undo()
    assert info.value.reason == "changing"
    assert bytes_read() - before < saved.size + (1 << 20)


def test_a_file_growing_while_loads_run_is_never_read_past_the_limit(tmp_path: Path) -> None:
    """With a writer appending, every load is refused and none reads more than max_bytes + 1."""
    grow = tmp_path / "grow.pt"
    grow.write_bytes(b"")
    limits = CheckpointLimits(max_bytes=4 << 20)
    stop = threading.Event()

    def writer() -> None:
        with open(grow, "ab") as fh:
            while not stop.is_set() and fh.tell() < 256 << 20:
                fh.write(b"\0" * (64 << 10))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            before = bytes_read()
            with pytest.raises(CheckpointLoadError):
                load_checkpoint(grow, limits=limits)
            assert bytes_read() - before <= limits.max_bytes + (1 << 20)
    finally:
        stop.set()
        thread.join()


def test_a_loaded_checkpoint_and_a_failure_both_carry_the_file_identity(tmp_path: Path) -> None:
    """A load carries the file's identity; so does a sha256 mismatch; a missing file has none."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    identity = file_identity(saved.path)
    assert identity == FileIdentity(
        str(saved.path), saved.size, saved.path.stat().st_mtime_ns,
        saved.path.stat().st_ino, saved.path.stat().st_dev,
    )  # fmt: skip
    assert load_checkpoint(saved.path).identity == identity
    with pytest.raises(CheckpointError) as mismatch:
        load_checkpoint(saved.path, expected_sha256="0" * 64)
    assert mismatch.value.reason == "sha256_mismatch" and mismatch.value.identity == identity
    with pytest.raises(CheckpointLoadError) as missing:
        load_checkpoint(tmp_path / "nope.pt")
    assert missing.value.reason == "missing" and missing.value.identity is None
    with pytest.raises(CheckpointLoadError) as gone:
        file_identity(tmp_path / "nope.pt")
    assert gone.value.reason == "missing"


def test_a_symlink_is_not_followed_but_its_resolved_path_loads(tmp_path: Path) -> None:
    """Callers resolve paths: the link is refused, the real file behind it loads."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor(), version=1)
    link = tmp_path / "model_latest.pt"
    link.symlink_to(saved.path)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(link)
    assert info.value.reason == "not_regular_file"
    assert load_checkpoint(link.resolve()).version == 1


def test_a_directory_swapped_for_a_symlink_cannot_lead_a_read_beneath_a_root_outside(
    tmp_path: Path,
) -> None:
    """``beneath``: the file is reached from the root through real directories only. A
    directory on the way that became a symlink after the caller resolved the path
    (``O_NOFOLLOW`` on the whole path guards its last component only) is refused before a
    byte is read, whatever the link names: a directory outside, or one reached through
    ``/proc/self/root`` (a link of the kind that names another mount namespace's files as
    if they lay inside). The same read of a file that stayed inside loads."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    save_checkpoint(root / "sub" / "model_1.pt", SACActor(), version=1)
    save_checkpoint(outside / "model_1.pt", SACActor(), version=666)
    real_root = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(root / "sub" / "model_1.pt"))
    assert load_checkpoint(resolved, beneath=real_root).version == 1
    (root / "sub").rename(root / "old")
    for link in (outside, Path(f"/proc/self/root{os.path.realpath(root / 'old')}")):
        (root / "sub").symlink_to(link, target_is_directory=True)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(resolved, beneath=real_root)
        assert info.value.reason == "outside_roots"
        assert "no longer a directory" in str(info.value)
        (root / "sub").unlink()
    (root / "sub").symlink_to(outside, target_is_directory=True)
    assert load_checkpoint(resolved).version == 666  # what the walk kept out


def test_a_path_not_under_the_root_it_is_read_beneath_is_refused(tmp_path: Path) -> None:
    saved = save_checkpoint(tmp_path / "a" / "model_1.pt", SACActor(), version=1)
    (tmp_path / "b").mkdir()
    for path in (saved.path, tmp_path / "b" / ".." / "a" / "model_1.pt", tmp_path / "b"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, beneath=tmp_path / "b")
        assert info.value.reason == "outside_roots"
