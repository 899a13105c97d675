"""Run the real server (uvicorn, ``create_app``) as a child process on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

import httpx

from common.closing import Service
from fks.redis_server import free_port
from fks.spawn import spawn, wait_started

__all__ = ["ServerProcess"]


class ServerProcess(Service):
    """``python -m uvicorn subscriber.web.app:create_app --factory`` with the given environment."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Self:
        """Start and wait until ``/sac/health`` answers."""
        args = [
            sys.executable, "-m", "uvicorn", "subscriber.web.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = spawn(args, self.log_path, env=self.env)
        wait_started(self.process, self._healthy, timeout, "server did not answer /sac/health",
                     exited=lambda code: f"server exited with {code} at start",
                     retry_on=(httpx.HTTPError,), give_up=self.stop)  # fmt: skip
        return self

    def _healthy(self) -> bool:
        return httpx.get(self.url + "/sac/health", timeout=1).status_code == 200

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """:meth:`stop`, with its default timeout (what ``with`` does at the end)."""
        self.stop()
