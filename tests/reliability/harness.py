"""Shared pieces of the reliability suite: predicting clients, figures, a server on a root."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fks.server_process import ServerProcess
from tests.helpers import wait_for

STATE = [0.05] * 28
FIGURES: dict[str, dict[str, Any]] = {}
Serve = Callable[..., ServerProcess]


def record(scenario: str, **figures: Any) -> None:
    """Keep a scenario's measured figures for the end-of-session table (and JSON)."""
    FIGURES.setdefault(scenario, {}).update(figures)


def dump_figures() -> str:
    lines = []
    for scenario, figures in FIGURES.items():
        shown = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )
        lines.append(f"{scenario}: {shown}")
    if target := os.environ.get("FKS_RELIABILITY_JSON"):
        Path(target).write_text(json.dumps(FIGURES, indent=2))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Response:
    at: float
    status: int
    version: int
    generation: int
    path: str


@dataclass
class Clients:
    """``n`` threads predicting in a closed loop until stopped; every response is kept."""

    url: str
    n: int = 16
    pause: float = 0.0
    seen: list[list[Response]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Clients:
        self.seen = [[] for _ in range(self.n)]
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.n)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _loop(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post("/sac/predict", json={"state": STATE})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                body = r.json() if r.status_code == 200 else {}
                self.seen[index].append(
                    Response(
                        time.monotonic(), r.status_code, body.get("version", -1),
                        body.get("generation", -1), body.get("model_path", ""),
                    )
                )  # fmt: skip
                if self.pause:
                    time.sleep(self.pause)

    @property
    def responses(self) -> list[Response]:
        return [r for client in self.seen for r in client]

    def failures(self) -> list[Response]:
        return [r for r in self.responses if r.status != 200]

    def regressions(self) -> int:
        """Responses whose generation is lower than one the same client saw before."""
        count = 0
        for client in self.seen:
            high = -1
            for r in client:
                if r.status == 200:
                    count += r.generation < high
                    high = max(high, r.generation)
        return count

    def first_seen(self, version: int, after: float = 0.0) -> float | None:
        times = [r.at for r in self.responses if r.version >= version and r.at >= after]
        return min(times) if times else None


def wait_version(clients: Clients, version: int, since: float, timeout: float = 15.0) -> float:
    """Seconds from ``since`` until some client got a response of ``version`` or newer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = clients.first_seen(version, since)
        if seen is not None:
            return seen - since
        time.sleep(0.005)
    raise AssertionError(f"version {version} was not served within {timeout}s")


def until(predicate: Callable[[], object], timeout: float) -> float:
    """Poll ``predicate`` every 20 ms (most polls are HTTP calls: spare the shared CPUs); the
    seconds it took, AssertionError after ``timeout``."""
    return wait_for(predicate, timeout=timeout, every=0.02)


def start_server(redis_url: str, root: Path, log: Path, **env: str) -> ServerProcess:
    base = {
        "REDIS_URL": redis_url,
        "STAT_PAIR_RL_DIR": str(root),
        "FKS_DEFAULT_DIR": str(root),
        "FKS_HEARTBEAT_SECONDS": "0.5",
    }
    return ServerProcess(base | env, log_path=log).start()


def real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path)


def served(url: str) -> tuple[int, str] | None:
    """(version, real path) of what ``/sac/predict`` answers with, None if not 200."""
    r = httpx.post(url + "/sac/predict", json={"state": STATE}, timeout=10)
    if r.status_code != 200:
        return None
    body = r.json()
    return int(body["version"]), real(body["model_path"])


def mode(url: str) -> str:
    return str(httpx.get(url + "/sac/health", timeout=10).json()["mode"])


def events(url: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The node's event log, newest first (at most ``limit``)."""
    r = httpx.get(url + "/sac/model/history", params={"limit": limit}, timeout=10)
    return list(r.json()["events"])


def log_tail(server: ServerProcess, lines: int = 40) -> str:
    """The end of a server's log, for assertion messages."""
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return "server log:\n" + "\n".join(text.splitlines()[-lines:])


def metric(url: str, name: str, labels: str = "", headers: dict[str, str] | None = None) -> float:
    """The sum of the samples ``name`` of the server's /metrics whose labels include
    ``labels`` (``'reason="x"'``; every series of the model also carries ``model``); 0 when
    there are none."""
    text = httpx.get(url + "/metrics", headers=headers or {}, timeout=10).text
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and wanted.items() <= sample.labels.items():
                total += sample.value
    return total
