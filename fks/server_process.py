"""Run the real server (uvicorn, ``create_app``) as a child process on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import httpx

from fks.redis_server import free_port
from fks.waiting import wait_until

__all__ = ["ServerProcess"]


class ServerProcess:
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

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start and wait until ``/sac/health`` answers."""
        args = [
            sys.executable, "-m", "uvicorn", "subscriber.web.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} at start")
            return httpx.get(self.url + "/sac/health", timeout=1).status_code == 200

        try:
            wait_until(healthy, timeout, "server did not answer /sac/health",
                       retry_on=(httpx.HTTPError,))  # fmt: skip
        except TimeoutError:
            self.stop()
            raise
        return self

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

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
