"""Redis beyond one server under load (SPEC §10): 8 clients predict while a trainer notifies
every 200 ms, and the Redis behind them fails over again and again. No request fails, no
checkpoint is lost (the node ends on the newest), and the figure is kill (or failover) →
the first swap of a notification published after it.

``FKS_HA_ROUNDS`` failovers per scenario (2 in ``make test``, 5 in ``make reliability``).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from common.settings import keys_for
from fks.redis_seven import Redis7Unavailable, ensure_redis7
from fks.redis_tls import TlsRedis
from fks.redis_topology import ClusterSet, SentinelSet
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint
from tests.reliability.harness import Clients, record, start_server, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # 5 failovers take a minute
ROUNDS = int(os.environ.get("FKS_HA_ROUNDS", "2"))
CADENCE = 0.2


@dataclass
class Trainer:
    """Notifies checkpoint v, v+1, … every 200 ms on its own thread; keeps every outcome."""

    url: str
    incoming: Path
    instance: str = "default"
    sent: list[tuple[int, float]] = field(default_factory=list)  # (version, when published)
    outcomes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Trainer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        version = 1
        with CheckpointNotifier(self.url, self.instance) as notifier:
            while not self._stop.is_set():
                version += 1
                started = time.monotonic()
                path = write_checkpoint(self.incoming, version).path
                result = notifier.notify(path, version=version)
                self.outcomes.append(result.outcome)
                if result.sent:
                    self.sent.append((version, time.monotonic()))
                self._stop.wait(max(0.0, CADENCE - (time.monotonic() - started)))

    def first_sent_after(self, moment: float, timeout: float = 20.0) -> int:
        """The first version published after ``moment`` (waits for one)."""
        wait_for(lambda: any(at > moment for _, at in self.sent), timeout=timeout, every=0.02)
        return next(v for v, at in self.sent if at > moment)

    @property
    def newest(self) -> int:
        return max(v for v, _ in self.sent)


def _served(server: ServerProcess) -> int:
    return int(httpx.get(server.url + "/sac/model/info", timeout=5).json()["version"])


def _connected(server: ServerProcess) -> bool:
    try:
        return bool(httpx.get(server.url + "/sac/health", timeout=5).json()["redis_connected"])
    except httpx.HTTPError:
        return False


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1e3, 1),
        "max_ms": round(max(values) * 1e3, 1),
    }


def _first_swap(clients: Clients, trainer: Trainer, since: float) -> float:
    """Seconds from ``since`` until a client was first served the first version published
    after it (or a newer one)."""
    version = trainer.first_sent_after(since)
    try:
        until(lambda: clients.first_seen(version, since) is not None, timeout=30)
    except AssertionError:
        served = [r.version for r in clients.responses[-3:]]
        at = next(at for v, at in trainer.sent if v == version)
        raise AssertionError(
            f"version {version} (published {at - since:.1f}s after the "
            f"failover) not served; last served {served}, last sent {trainer.sent[-3:]}, "
            f"last outcomes {trainer.outcomes[-5:]}"
        ) from None
    seen = clients.first_seen(version, since)
    assert seen is not None
    return seen - since


def _run_failovers(
    scenario: str,
    redis_url: str,
    tmp_path: Path,
    fail: Callable[[], Callable[[], None]],
    ready: Callable[[], None] = lambda: None,
    *,
    instance: str,
) -> None:
    """Serve under load with a trainer notifying; ``fail()`` fails Redis over and returns
    how to put it back together before the next round. Each scenario has an instance of its
    own (its versions start again at 2)."""
    root = tmp_path / "models"
    incoming = root / "incoming"  # inside the root, never scanned: only Redis brings these
    incoming.mkdir(parents=True)
    write_checkpoint(root, 1)
    server = start_server(redis_url, root, tmp_path / "server.log", FKS_INSTANCE_ID=instance)
    swaps: list[float] = []
    try:
        until(lambda: _connected(server), timeout=20)
        with (
            Clients(server.url, n=8, pause=0.002) as clients,
            Trainer(redis_url, incoming, instance) as trainer,
        ):
            trainer.first_sent_after(time.monotonic())
            for _ in range(ROUNDS):
                ready()  # e.g. the last failover over, a new one allowed
                repair = fail()  # returns once the kill or the failover command is done
                failed_at = time.monotonic()
                swaps.append(_first_swap(clients, trainer, failed_at))
                repair()
        newest = trainer.newest
        until(lambda: _served(server) == newest, timeout=10)
        final = _served(server)
    finally:
        server.stop()
    failed = len(clients.failures()) + len(clients.errors)
    record(
        scenario, rounds=ROUNDS, requests=len(clients.responses), failed=failed,
        notifications=len(trainer.outcomes), published=len(trainer.sent),
        not_sent=trainer.outcomes.count("not_sent"), unknown=trainer.outcomes.count("unknown"),
        final_version=final, newest=newest, failover_to_first_swap=_ms(swaps),
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert final == newest


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet() as topology:
        yield topology


def test_sentinel_master_sigkilled(sentinels: SentinelSet, tmp_path: Path) -> None:
    """Master SIGKILLed ROUNDS times (the killed one rejoins as a replica each time)."""

    def kill() -> Callable[[], None]:
        killed = sentinels.kill_master()

        def repair() -> None:
            sentinels.wait_new_master(killed.port)
            sentinels.rejoin(killed)

        return repair

    scenario = f"sentinel: master SIGKILL x{ROUNDS}"
    _run_failovers(
        scenario, sentinels.url, tmp_path, kill, sentinels.wait_settled, instance="ha-kill"
    )


def test_sentinel_manual_failover_the_quiet_trap(sentinels: SentinelSet, tmp_path: Path) -> None:
    """SENTINEL FAILOVER ROUNDS times: the old master stays up (demoted afterwards)."""

    def failover() -> Callable[[], None]:
        old = sentinels.master_port()
        sentinels.failover()

        def repair() -> None:
            sentinels.wait_new_master(old)
            sentinels.settle(old)

        return repair

    scenario = f"sentinel: manual SENTINEL FAILOVER x{ROUNDS}"
    _run_failovers(
        scenario, sentinels.url, tmp_path, failover, sentinels.wait_settled, instance="ha-manual"
    )


def test_cluster_slot_owner_killed(tmp_path: Path) -> None:
    """The master of the instance's slot SIGKILLed ROUNDS times, its replica promoted."""
    with ClusterSet(masters=3, replicas=1) as cluster:
        latest = keys_for("ha-cluster", cluster.url).latest

        def kill() -> Callable[[], None]:
            killed = cluster.owner(latest)
            killed.kill()

            def repair() -> None:
                until(lambda: cluster.owner(latest).port != killed.port, timeout=20)
                cluster.rejoin(killed)

            return repair

        scenario = f"cluster: slot owner SIGKILL x{ROUNDS}"
        _run_failovers(scenario, cluster.url, tmp_path, kill, instance="ha-cluster")


def test_tls_end_to_end(tmp_path: Path) -> None:
    """The whole flow over TLS: a served node, clients predicting, a trainer notifying (a
    client without the CA is refused: tests/test_redis_tls_acl.py)."""
    try:
        binary = ensure_redis7()
    except Redis7Unavailable as exc:
        pytest.skip(f"no Redis 7 with TLS: {exc}")
    server_redis = TlsRedis(binary, tmp_path / "redis")
    server_redis.start()
    try:
        root = tmp_path / "models"
        incoming = root / "incoming"
        incoming.mkdir(parents=True)
        write_checkpoint(root, 1)
        server = start_server(server_redis.url, root, tmp_path / "server.log")
        try:
            until(lambda: _connected(server), timeout=20)
            clients = Clients(server.url, n=8, pause=0.002)
            trainer = Trainer(server_redis.url, incoming)
            with clients, trainer:
                trainer.first_sent_after(time.monotonic() + 2.0)
            newest = trainer.newest
            until(lambda: _served(server) == newest, timeout=10)
        finally:
            server.stop()
    finally:
        server_redis.close()
    record(
        "tls: whole flow", requests=len(clients.responses),
        failed=len(clients.failures()) + len(clients.errors), published=len(trainer.sent),
        notifications=len(trainer.outcomes), newest=newest,
    )  # fmt: skip
    assert clients.failures() == [] and clients.errors == []
    assert len(trainer.sent) == len(trainer.outcomes)


def test_back_within_a_second_after_redis_returns(tmp_path: Path) -> None:
    """Redis SIGKILLed for 2 s (the backoff at its cap) ROUNDS times: from the moment it
    answers again to the listener subscribed and caught up, under a second every time."""
    from common import Settings
    from fks.redis_server import EmbeddedRedis
    from subscriber import ServingNode

    returns: list[float] = []
    with EmbeddedRedis(persistent=False) as server_redis:
        root = tmp_path / "models"
        root.mkdir()
        settings = Settings(redis_url=server_redis.url, model_dir=root, default_model_dir=root)
        node = ServingNode(settings).start()
        try:
            until(lambda: node.listener.connected, timeout=10)
            for _ in range(ROUNDS):
                server_redis.kill()
                time.sleep(2.0)
                server_redis.start()  # returns once it answers PING
                back = time.monotonic()
                until(lambda: node.listener.connected, timeout=10)
                returns.append(time.monotonic() - back)
        finally:
            node.stop()
    record(f"redis returns after 2 s away x{ROUNDS}: listener back", **_ms(returns))
    assert max(returns) < 1.0, returns
