"""A real S3-protocol server (``moto_server``, from ``moto[server]``) as a process on a free
loopback port, for the tests and the benchmarks: start, kill, restart.

moto keeps its objects in memory, so a restarted server is empty: :meth:`MotoServer.restart`
puts back the buckets and objects written through :meth:`MotoServer.put` (a durable store
that was unreachable for a moment). The environment that ``s3fs``/``botocore`` read
(``AWS_ENDPOINT_URL``, dummy credentials, region) is :attr:`MotoServer.env`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

import httpx

from common.closing import Service
from fks.redis_server import free_port
from fks.spawn import spawn, wait_started

__all__ = ["MotoServer", "find_moto_server"]

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def find_moto_server() -> str:
    """The ``moto_server`` executable: beside the running Python (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise FileNotFoundError("moto_server not found: pip install 'moto[server]'")
    return found


class MotoServer(Service):
    def __init__(self, *, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        # "bucket/key" -> (bytes, sha256): put back on restart
        self._objects: dict[str, tuple[bytes, str | None]] = {}
        self._buckets: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server with botocore/s3fs."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **DUMMY_CREDENTIALS}

    def start(self, timeout: float = 30.0) -> Self:
        self.process = spawn(
            [find_moto_server(), "-H", "127.0.0.1", "-p", str(self.port)],
            self.log_path,
            env={**os.environ, **DUMMY_CREDENTIALS},
        )

        def answered() -> bool:
            httpx.get(self.endpoint + "/moto-api/", timeout=1)
            return True

        wait_started(self.process, answered, timeout, "moto_server did not answer",
                     exited=lambda code: f"moto_server exited with {code}",
                     retry_on=(httpx.HTTPError,), give_up=self.kill)  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: connections are cut mid-transfer."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Kill (if running), start on the same port, put back what was written."""
        self.kill()
        self.start()
        self.restore()

    # -- a durable store's contents ------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        self._buckets.append(bucket)
        self._client().create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes, sha256: str | None = None) -> None:
        """Write an object (kept, to be put back after a restart)."""
        self._objects[f"{bucket}/{key}"] = (data, sha256)
        self._put(bucket, key, data, sha256)

    def remember(self, bucket: str, key: str, data: bytes, sha256: str | None = None) -> None:
        """Keep an object written by someone else, to put it back after a restart."""
        self._objects[f"{bucket}/{key}"] = (data, sha256)

    def restore(self) -> None:
        client = self._client()
        for bucket in self._buckets:
            client.create_bucket(Bucket=bucket)
        for name, (data, sha256) in self._objects.items():
            bucket, key = name.split("/", 1)
            self._put(bucket, key, data, sha256)

    def _put(self, bucket: str, key: str, data: bytes, sha256: str | None) -> None:
        extra = {"Metadata": {"sha256": sha256}} if sha256 else {}
        self._client().put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def _client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    def close(self) -> None:
        self.kill()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
