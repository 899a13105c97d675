"""``fks demo``: the main job on one machine, start to finish.

Redis (``$REDIS_URL`` if it answers, else an embedded ``redis-server`` on a free port) → the
server (a real uvicorn process) → the trainer (a separate process, announcing a checkpoint
every N steps) → a client that keeps predicting. Each swap is printed as the client first
sees it, with its notify→swap time (the demo's own subscriber stamps the announcement, the
server's history stamps the swap). A summary follows; the exit code is 0 when every request
succeeded and the newest checkpoint ended up served.

With ``--instances N`` (SPEC §13) the one server serves N models, ``<instance>-1`` ..
``<instance>-N``, each trained by a trainer of its own (its own seed) into its own directory
(``STAT_PAIR_RL_DIR=…/{instance}``); a client per model predicts through the Open Inference
Protocol (``/v2/models/<name>/infer``) and prints each swap of its model as it first sees it,
with the time from the announcement to that answer. The models swap independently.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from common.keys import RedisKeys
from common.notification import CheckpointNotification
from fks.redis_server import EmbeddedRedis
from fks.server_process import ServerProcess

__all__ = ["DemoConfig", "run_demo"]

STATE = [0.0] * 28


@dataclass(frozen=True, slots=True)
class DemoConfig:
    steps: int = 3000
    every: int = 300
    warmup: int = 500
    redis_url: str | None = None
    instance_id: str = "demo"
    request_interval: float = 0.01
    jit: bool = True
    algo: str = "sac"
    instances: int = 1  # models on the one server (SPEC §13)


@dataclass
class _Swap:
    version: int
    generation: int
    lag_ms: float | None
    eval_return: str


@dataclass
class _Client:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    swaps: list[_Swap] = field(default_factory=list)


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[tuple[str, str]]:
    if url:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            yield url, f"Redis at {url}"
            return
        except (redis.RedisError, OSError):
            print(f"  {url} does not answer; starting an embedded redis-server instead")
    with EmbeddedRedis(persistent=False) as server:
        yield server.url, f"embedded redis-server ({server.binary}) on port {server.port}"


class _Announcements:
    """The demo's own subscriber: wall-clock receipt time and metadata of each version."""

    def __init__(self, url: str, channel: str) -> None:
        self.seen: dict[int, tuple[float, CheckpointNotification]] = {}
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{channel: self._on})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _on(self, message: dict[str, object]) -> None:
        received = time.time()
        try:
            n = CheckpointNotification.from_message(message["data"])  # type: ignore[arg-type]
        except ValueError:
            return
        self.seen[n.version] = (received, n)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()


def _watch(
    server: ServerProcess, news: _Announcements, stats: _Client, stop: threading.Event,
    interval: float,
) -> None:  # fmt: skip
    generation = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while not stop.is_set():
            body = _predicted(client, "/sac/predict", {"state": STATE}, stats, interval)
            if body is None:
                continue
            if body["generation"] != generation:
                generation = body["generation"]
                stats.swaps.append(_swap(client, news, body["version"], generation))
                _print_swap(stats.swaps[-1], stats)
            time.sleep(interval)


def _predicted(
    client: httpx.Client, path: str, body: dict[str, Any], stats: _Client, interval: float
) -> dict[str, Any] | None:
    """One prediction's answer, counted; None (a failure noted, or no model yet: after a
    pause) when there is none to read."""
    try:
        response = client.post(path, json=body)
    except httpx.HTTPError as exc:
        stats.failures.append(f"{type(exc).__name__}: {exc}")
        return None
    stats.requests += 1
    if response.status_code == 503 and not stats.swaps:
        time.sleep(interval)  # no model yet: the trainer has not announced one
        return None
    if response.status_code != 200:
        stats.failures.append(f"{response.status_code}: {response.text[:200]}")
        return None
    answer: dict[str, Any] = response.json()
    return answer


def _swap(client: httpx.Client, news: _Announcements, version: int, generation: int) -> _Swap:
    lag: float | None = None
    eval_return = "?"
    if version in news.seen:
        received, note = news.seen[version]
        eval_return = note.metadata.get("eval_return", "?")
        history = client.get("/sac/model/history").json()["generations"]
        loaded = next((g["loaded_at"] for g in history if g["generation"] == generation), None)
        if loaded is not None:
            lag = (datetime.fromisoformat(loaded).timestamp() - received) * 1e3
    return _Swap(version, generation, lag, eval_return)


def _print_swap(swap: _Swap, stats: _Client) -> None:
    lag = f"{swap.lag_ms:6.1f} ms" if swap.lag_ms is not None else "   (from disk)"
    print(
        f"  swap  version {swap.version:>3}  generation {swap.generation:>3}  "
        f"notify→swap {lag}  eval return {swap.eval_return:>8}  "
        f"requests {stats.requests:>6}  failed {len(stats.failures)}",
        flush=True,
    )


def _await_subscribed(server: ServerProcess) -> None:
    """Wait until the server listens on Redis (15 s at most), and say where it is."""
    with httpx.Client(base_url=server.url) as probe:
        deadline = time.monotonic() + 15
        while not probe.get("/sac/health").json()["redis_connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the server never subscribed to Redis")
            time.sleep(0.05)
    print(f"  server:  {server.url} (pid {server.process.pid if server.process else '?'})")


def _watch_v2(
    server: ServerProcess, name: str, news: _Announcements, stats: _Client,
    stop: threading.Event, interval: float,
) -> None:  # fmt: skip
    """One model's client: JSON infers on ``/v2/models/<name>/infer``; a new version is printed
    with the time from its announcement to the first answer that names it."""
    body = {"inputs": [{"name": "state", "shape": [1, 28], "datatype": "FP32", "data": STATE}]}
    version = ""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while not stop.is_set():
            answer = _predicted(client, f"/v2/models/{name}/infer", body, stats, interval)
            seen = time.time()
            if answer is None:
                continue
            answered = answer["model_version"]
            if answered != version:
                version = answered
                note = news.seen.get(int(version))
                lag = (seen - note[0]) * 1e3 if note is not None else None
                ret = note[1].metadata.get("eval_return", "?") if note is not None else "?"
                stats.swaps.append(_Swap(int(version), len(stats.swaps) + 1, lag, ret))
                swap = stats.swaps[-1]
                shown = f"{lag:6.1f} ms" if lag is not None else "   (from disk)"
                print(
                    f"  {name:<8} swap  version {swap.version:>3}  notify→answer {shown}  "
                    f"eval return {swap.eval_return:>8}  requests {stats.requests:>6}  "
                    f"failed {len(stats.failures)}",
                    flush=True,
                )
            time.sleep(interval)


def run_demo(config: DemoConfig) -> int:
    if config.instances > 1:
        return _run_many(config)
    started = time.monotonic()
    print("fks demo: embedded Redis + server + trainer, live swaps\n", flush=True)
    with (
        _redis(config.redis_url) as (url, described),
        tempfile.TemporaryDirectory(prefix="fks-demo-") as tmp,
    ):
        models = Path(tmp) / "models"
        models.mkdir()
        print(f"  redis:   {described}")
        env = {
            "REDIS_URL": url,
            "FKS_INSTANCE_ID": config.instance_id,
            "STAT_PAIR_RL_DIR": str(models),
            "FKS_DEFAULT_DIR": str(models),
            "STAT_PAIR_RL_JIT": "true" if config.jit else "false",
        }
        server = ServerProcess(env, log_path=Path(tmp) / "server.log").start()
        news = _Announcements(url, RedisKeys(config.instance_id).channel)
        stats, stop = _Client(), threading.Event()
        try:
            _await_subscribed(server)
            print(f"  models:  {models}")
            print(
                f"  trainer: {config.algo}, {config.steps} steps, a checkpoint every "
                f"{config.every}\n"
            )
            watcher = threading.Thread(
                target=_watch, args=(server, news, stats, stop, config.request_interval),
                daemon=True,
            )  # fmt: skip
            watcher.start()
            trainer = subprocess.run(
                [
                    sys.executable, "-m", "fks", "train", "--steps", str(config.steps),
                    "--every", str(config.every), "--warmup", str(config.warmup),
                    "--dir", str(models), "--instance", config.instance_id,
                    "--redis-url", url, "--algo", config.algo, "--quiet",
                ],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            newest = max(news.seen, default=0)
            deadline = time.monotonic() + 10
            while (not stats.swaps or stats.swaps[-1].version < newest) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            stop.set()
            watcher.join(15)
        finally:
            stop.set()
            news.close()
            server.stop()
        return _summary(config, trainer, news, stats, newest, time.monotonic() - started)


def _summary(
    config: DemoConfig,
    trainer: subprocess.CompletedProcess[str],
    news: _Announcements,
    stats: _Client,
    newest: int,
    seconds: float,
) -> int:
    lags = [s.lag_ms for s in stats.swaps if s.lag_ms is not None]
    returns = [n.metadata.get("eval_return", "?") for _, n in sorted(news.seen.values())]
    final = stats.swaps[-1].version if stats.swaps else None
    ok = trainer.returncode == 0 and not stats.failures and final == newest and newest > 0
    print("\nsummary")
    rows = [
        ("checkpoints announced", f"{len(news.seen)} (versions up to {newest})"),
        ("swaps seen by the client", f"{len(stats.swaps)}"),
        ("requests", f"{stats.requests}, failed {len(stats.failures)}"),
        (
            "notify → swap",
            f"p50 {statistics.median(lags):.1f} ms, max {max(lags):.1f} ms" if lags else "-",
        ),
        ("eval return", f"{returns[0]} → {returns[-1]}" if returns else "-"),
        ("newest served at the end", f"{final} ({'yes' if final == newest else 'NO'})"),
        ("wall time", f"{seconds:.1f} s"),
    ]
    for name, value in rows:
        print(f"  {name:<26} {value}")
    if trainer.returncode != 0:
        print(f"\ntrainer failed ({trainer.returncode}):\n{trainer.stderr[-2000:]}")
    for failure in stats.failures[:5]:
        print(f"  failed request: {failure}")
    print("\nOK" if ok else "\nFAILED")
    return 0 if ok else 1


def _run_many(config: DemoConfig) -> int:
    """``fks demo --instances N``: one server, N models, N trainers at once."""
    started = time.monotonic()
    names = [f"{config.instance_id}-{k}" for k in range(1, config.instances + 1)]
    print(f"fks demo: one server, {len(names)} models ({', '.join(names)}), live swaps\n")
    with (
        _redis(config.redis_url) as (url, described),
        tempfile.TemporaryDirectory(prefix="fks-demo-") as tmp,
    ):
        models = Path(tmp) / "models"
        for name in names:
            (models / name).mkdir(parents=True)
        print(f"  redis:   {described}")
        env = {
            "REDIS_URL": url,
            "FKS_INSTANCE_IDS": ",".join(names),
            "STAT_PAIR_RL_DIR": str(models / "{instance}"),
            "FKS_DEFAULT_DIR": str(models / "{instance}"),
            "STAT_PAIR_RL_JIT": "true" if config.jit else "false",
        }
        server = ServerProcess(env, log_path=Path(tmp) / "server.log").start()
        news = {name: _Announcements(url, RedisKeys(name).channel) for name in names}
        stats = {name: _Client() for name in names}
        stop = threading.Event()
        trainers: dict[str, subprocess.Popen[str]] = {}
        try:
            _await_subscribed(server)
            print(f"  models:  {models}/{{{', '.join(names)}}}")
            print(
                f"  trainers: {len(names)} at once, {config.algo}, {config.steps} steps, a "
                f"checkpoint every {config.every}\n"
            )
            watchers = [
                threading.Thread(
                    target=_watch_v2,
                    args=(server, name, news[name], stats[name], stop, config.request_interval),
                    daemon=True,
                )
                for name in names
            ]
            for watcher in watchers:
                watcher.start()
            for seed, name in enumerate(names):
                trainers[name] = subprocess.Popen(
                    [
                        sys.executable, "-m", "fks", "train", "--steps", str(config.steps),
                        "--every", str(config.every), "--warmup", str(config.warmup),
                        "--dir", str(models / name), "--instance", name, "--seed", str(seed),
                        "--redis-url", url, "--algo", config.algo, "--quiet",
                    ],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
            errors = {name: trainer.communicate()[1] for name, trainer in trainers.items()}
            newest = {name: max(news[name].seen, default=0) for name in names}

            def behind() -> bool:
                return any(
                    not stats[n].swaps or stats[n].swaps[-1].version < newest[n] for n in names
                )

            deadline = time.monotonic() + 10
            while behind() and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            for watcher in watchers:
                watcher.join(15)
        finally:
            stop.set()
            for trainer in trainers.values():
                if trainer.poll() is None:
                    trainer.kill()
            for announcements in news.values():
                announcements.close()
            server.stop()
    print("\nsummary")
    ok = True
    for name in names:
        s, trainer = stats[name], trainers[name]
        lags = [w.lag_ms for w in s.swaps if w.lag_ms is not None]
        final = s.swaps[-1].version if s.swaps else None
        good = trainer.returncode == 0 and not s.failures and newest[name] > 0
        good = good and final == newest[name]
        ok = ok and good
        lag = f"notify→answer p50 {statistics.median(lags):.1f} ms" if lags else "-"
        print(
            f"  {name:<10} announced {len(news[name].seen):>3}  swaps seen {len(s.swaps):>3}  "
            f"requests {s.requests:>6} failed {len(s.failures)}  {lag}  newest served "
            f"{final} ({'yes' if final == newest[name] else 'NO'})"
        )
        if trainer.returncode != 0:
            print(f"  {name}: trainer failed ({trainer.returncode}):\n{errors[name][-2000:]}")
        for failure in s.failures[:5]:
            print(f"  {name}: failed request: {failure}")
    print(f"  {'wall time':<10} {time.monotonic() - started:.1f} s")
    print("\nOK" if ok else "\nFAILED")
    return 0 if ok else 1
