"""HTTP benchmarks on one uvicorn worker: throughput, batch rows/s, and the swap-storm tail.

The load generator is ``wrk`` when installed (``apt-get install wrk``), else the Python
closed-loop client of ``bench/load.py`` (which tops out lower: compare ratios, not absolutes;
``FKS_BENCH_NO_WRK=1`` forces it, as the CI smoke test does).
Every comparison alternates its sides over several rounds in one run and keeps the medians.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench._util import make_checkpoint, stat_cpu, summary_ms
from fks.redis_server import EmbeddedRedis, free_port
from publisher import CheckpointNotifier

BODY = json.dumps({"state": [0.05] * 28})
JSON = {"content-type": "application/json"}


# The server stacks uvicorn offers: ``auto`` is uvloop and httptools, installed with the
# project (uvicorn[standard]) and what ``fks serve`` runs by default; the plain one is asyncio
# and h11 (uvicorn without its extras).
STACKS = {
    "uvloop + httptools": ("--loop", "uvloop", "--http", "httptools"),
    "asyncio + h11": ("--loop", "asyncio", "--http", "h11"),
}
API_KEY = "bench-key"
HEADERS = {**JSON, "X-API-Key": API_KEY}


class Uvicorn:
    def __init__(self, factory: str, env: dict[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(self.port),
            "--log-level", "warning", "--no-access-log", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": ".", **env})
        deadline = time.monotonic() + 60
        while True:
            try:  # ours answers health even without a model; the baseline only predicts
                if httpx.get(self.url + "/sac/health").status_code == 200:
                    break
                answer = httpx.post(self.url + "/sac/predict", content=BODY, headers=HEADERS)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise TimeoutError(f"{factory} did not start")
            time.sleep(0.1)

    def cpu(self) -> float:
        """The server process's CPU seconds so far (user + system, all its threads)."""
        return stat_cpu(Path(f"/proc/{self.proc.pid}/stat"))[1]

    def measured(self, path: str, seconds: float, **options: Any) -> dict[str, float]:
        """:func:`load` on ``path``, with the server's CPU µs per request (``cpu_us``)."""
        before = self.cpu()
        result = load(self.url + path, seconds, **options)
        requests = result["rps"] * max(1, round(seconds)) if _wrk() else result["requests"]
        result["cpu_us"] = (self.cpu() - before) / max(1.0, requests) * 1e6
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def _wrk() -> str | None:
    return None if os.environ.get("FKS_BENCH_NO_WRK") else shutil.which("wrk")


def load(
    url: str, seconds: float, connections: int = 16, body: str = BODY, *, key: str | None = None
) -> dict[str, float]:
    """req/s, p50 and p99 (ms) of a closed loop of ``connections`` clients (sending the API
    key ``key`` as ``X-API-Key`` if given)."""
    if _wrk():
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
                + (f'wrk.headers["X-API-Key"] = {json.dumps(key)}\n' if key else "")
            )
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", script.name,
             url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        os.unlink(script.name)
        return {
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": _wrk_ms(out, "50%"),
            "p99": _wrk_ms(out, "99%"),
            "errors": float(len(re.findall(r"Non-2xx", out))),
        }
    base, _, path = url.partition("/sac")
    requests = max(200, int(seconds * 400))
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", base, "/sac" + path, "--concurrency",
         str(connections), "--requests", str(requests), *(["--key", key] if key else [])],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": "."},
    ).stdout  # fmt: skip
    r = json.loads(out)
    return {"rps": r["rps"], "p50": r["p50_ms"], "p99": r["p99_ms"], "errors": r["errors"],
            "requests": float(requests)}  # fmt: skip


def _wrk_ms(out: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def generator() -> str:
    return "wrk" if _wrk() else "bench/load.py (Python)"


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def throughput(seconds: float = 3.0, rounds: int = 3) -> list[list[object]]:
    """/sac/predict (API key on, metrics on) vs a bare endpoint running the same policy on the
    same server, on uvicorn's two stacks (uvloop + httptools, asyncio + h11); the same logic
    in a sync handler; batch rows/s. Rows: route, stack, req/s, p50, p99, x bare's req/s,
    x bare's p99, the server's CPU µs per request, x bare's (the bare endpoint of the same
    stack)."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        make_checkpoint(root, 1)
        env = {"REDIS_URL": server.url, "STAT_PAIR_RL_DIR": tmp, "FKS_DEFAULT_DIR": tmp,
               "FKS_API_KEY": API_KEY}  # fmt: skip
        routes = {OURS_ROUTE: "/sac/predict", BARE_ROUTE: "/bare/predict"}
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        with contextlib.ExitStack() as stack:
            apps = {name: started(stack, "bench.http_app:create", env, *args)
                    for name, args in STACKS.items()}  # fmt: skip
            for _ in range(rounds):
                for stack_name, app in apps.items():
                    for name, path in routes.items():
                        run = app.measured(path, seconds, key=API_KEY)
                        runs.setdefault((name, stack_name), []).append(run)
            default = apps[DEFAULT_STACK]
            sync = [default.measured("/sync/predict", seconds, key=API_KEY)]
            runs[("same logic, sync def handler", DEFAULT_STACK)] = sync
            rows: list[list[object]] = []
            for (name, stack_name), r in runs.items():
                bare = runs[(BARE_ROUTE, stack_name)]
                rows.append([name, stack_name, median(r, "rps"), median(r, "p50"),
                             median(r, "p99"), median(r, "rps") / median(bare, "rps"),
                             median(r, "p99") / median(bare, "p99"), median(r, "cpu_us"),
                             median(r, "cpu_us") / median(bare, "cpu_us")])  # fmt: skip
            for size in (1, 32, 256):
                body = json.dumps({"states": [[0.05] * 28] * size})
                b = load(default.url + "/sac/predict/batch", seconds, connections=4, body=body,
                         key=API_KEY)  # fmt: skip
                rows.append([f"batch of {size}: rows/s", DEFAULT_STACK, b["rps"] * size,
                             b["p50"], b["p99"], "", "", "", ""])  # fmt: skip
            return rows


OURS_ROUTE = "ours /sac/predict (API key, metrics)"
BARE_ROUTE = "bare endpoint, same policy"
DEFAULT_STACK = "uvloop + httptools"


def started(stack: contextlib.ExitStack, factory: str, env: dict[str, str], *extra: str) -> Uvicorn:
    app = Uvicorn(factory, env, *extra)
    stack.callback(app.stop)
    return app


def with_swaps(
    measure: Callable[[], dict[str, float]], swap: Callable[[], None], rate: float
) -> dict[str, float]:
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            swap()
            stop.wait(1 / rate)

    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    try:
        return measure()
    finally:
        stop.set()
        thread.join(10)


def notify_to_response(publications: int = 200) -> dict[str, float]:
    """publish → the first HTTP response served by the new generation (one client looping)."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        files = [make_checkpoint(incoming, v) for v in range(1, publications + 1)]
        app = Uvicorn("subscriber.web.app:create_app", {
            "REDIS_URL": server.url, "STAT_PAIR_RL_DIR": str(root),
            "FKS_DEFAULT_DIR": str(root)})  # fmt: skip
        seen: dict[int, float] = {}
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=app.url) as http:
                while not stop.is_set():
                    r = http.post("/sac/predict", content=BODY, headers=JSON)
                    if r.status_code == 200:
                        seen.setdefault(r.json()["version"], time.perf_counter())

        thread = threading.Thread(target=client, daemon=True)
        try:
            lags = []
            with CheckpointNotifier(server.url) as notifier:
                notifier.notify(files[0].path, version=1, sha256=files[0].sha256)
                thread.start()
                deadline = time.monotonic() + 30
                while 1 not in seen:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the first version was never served")
                    time.sleep(0.01)
                for saved in files[1:]:
                    start = time.perf_counter()
                    notifier.notify(saved.path, version=saved.version, sha256=saved.sha256)
                    deadline = time.monotonic() + 10
                    while saved.version not in seen and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    if saved.version in seen:
                        lags.append(seen[saved.version] - start)
                    time.sleep(0.01)
        finally:
            stop.set()
            thread.join(10)
            app.stop()
    return summary_ms(lags)
