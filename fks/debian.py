"""Debian packages unpacked into a folder of ours, for the tests' real parts.

Some tests need a program the machine may lack (Redis 7 with TLS, libfaketime). On a Debian
machine :func:`unpack_packages` fetches the packages with ``apt-get download`` (``apt-get
update`` first when the package lists are missing, as root) and extracts them with ``dpkg
-x`` under a cache folder: nothing is installed system-wide and no service is started.
Processes that look for and fetch at once (the test workers of ``pytest -n``) take
:func:`fetch_lock` first, so one fetches and the others find what it unpacked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CACHE_HOME", "DebianUnavailable", "fetch_lock", "places", "unpack_packages"]

CACHE_HOME = Path(os.environ.get("FKS_CACHE_HOME", Path.home() / ".cache" / "fks"))


def places(env: str, program: str, *more: Path) -> list[Path]:
    """Where to look for ``program``, in order: ``$env``, ``PATH``, then ``more``."""
    found = [Path(given)] if (given := os.environ.get(env)) else []
    if on_path := shutil.which(program):
        found.append(Path(on_path))
    return [*found, *more]


class DebianUnavailable(RuntimeError):
    """The packages could not be fetched here; the message says why."""


@contextmanager
def fetch_lock() -> Iterator[None]:
    """One process at a time looks for and fetches packages (``apt-get`` takes its own locks,
    and a second unpack would empty the folder the first is filling)."""
    CACHE_HOME.mkdir(parents=True, exist_ok=True)
    with open(CACHE_HOME / "debian.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def unpack_packages(packages: Sequence[str], root: Path) -> Path:
    """Fetch ``packages`` (the first must be among the downloads) and unpack them into
    ``root`` (emptied first); returns ``root``."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DebianUnavailable(f"no apt-get/dpkg to fetch {', '.join(packages)}")
    with tempfile.TemporaryDirectory(prefix="fks-deb-") as tmp:
        if not _download(packages, tmp):
            if os.geteuid() != 0:
                raise DebianUnavailable(
                    f"apt-get download {' '.join(packages)} failed and only root can run "
                    "apt-get update"
                )
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            if not _download(packages, tmp):
                raise DebianUnavailable(
                    f"apt-get download {' '.join(packages)} failed after apt-get update"
                )
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    return root


def _download(packages: Sequence[str], directory: str) -> bool:
    result = subprocess.run(
        ["apt-get", "download", *packages], cwd=directory, capture_output=True, timeout=300
    )
    return result.returncode == 0 and any(Path(directory).glob(f"{packages[0]}_*.deb"))
