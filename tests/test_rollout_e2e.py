"""Rollouts end to end (SPEC §11): three real uvicorn servers (FKS_NODE_ID r1, r2, r3) and a
real redis-server; `fks notify --wait`, `fks rollout` run as a user runs them (the CLI's
main). The tests share the fleet and run in order, each leaving it on one version."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from common import RedisKeys
from fks.cli import main
from fks.redis_server import EmbeddedRedis
from fks.server_process import ServerProcess
from tests.fleet import POISON_STATE, STATE, served_version, start_fleet
from tests.helpers import repeating, wait_for, write_checkpoint, write_poisoned_checkpoint

KEYS = RedisKeys("default")
NAMES = ["r1", "r2", "r3"]

pytestmark = [pytest.mark.slow, pytest.mark.story]


@dataclass
class Fleet:
    url: str
    incoming: Path
    servers: dict[str, ServerProcess]
    client: redis.Redis

    def versions(self) -> dict[str, int | None]:
        return {name: served_version(s) for name, s in self.servers.items() if s.process}

    def latest_version(self) -> int:
        raw = self.client.get(KEYS.latest)
        return int(json.loads(raw)["version"]) if raw else 0

    def registry_version(self, name: str) -> object:
        raw = self.client.hget(KEYS.nodes, name)
        return json.loads(raw).get("version") if raw else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    models = root / "models"
    incoming = models / "incoming"  # not scanned by tier 2: served only when announced
    incoming.mkdir(parents=True)
    write_checkpoint(models, 1)  # every server starts on version 1 from disk
    with EmbeddedRedis(persistent=False) as server:
        servers = start_fleet(server.url, models, NAMES, root)
        client = redis.Redis.from_url(server.url)
        try:
            fleet = Fleet(server.url, incoming, servers, client)
            wait_for(lambda: all(fleet.registry_version(n) == 1 for n in NAMES), timeout=10)
            yield fleet
        finally:
            client.close()
            for s in servers.values():
                s.stop()


def fks(fleet: Fleet, *args: str) -> int:
    return main([*args, "--redis-url", fleet.url])


@contextlib.contextmanager
def traffic(fleet: Fleet, node: str, *states: list[float]) -> Iterator[None]:
    """Requests to ``node`` (each of ``states`` in turn) for as long as the block runs."""
    with httpx.Client(base_url=fleet.servers[node].url, timeout=5) as client:

        def predict() -> None:
            for state in states:
                client.post("/sac/predict", json={"state": state})

        with repeating(predict):
            yield


def test_notify_wait_all_prints_every_node_and_fails_on_rejection(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--wait all`: one row per live node, exit 0 when all applied; a checkpoint every node
    rejects (wrong sha256) exits 1 with each node's reason, every node still on the old one."""
    good = write_checkpoint(fleet.incoming, 2)
    assert fks(fleet, "notify", str(good.path), "--version", "2", "--wait", "all") == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert any(line.split()[:2] == [name, "applied"] for line in out.splitlines()), out
    assert set(fleet.versions().values()) == {2}

    bad = write_checkpoint(fleet.incoming, 3)
    code = fks(fleet, "notify", str(bad.path), "--version", "3", "--sha256", "0" * 64,
               "--wait", "all")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    rows = [line.split() for line in captured.out.splitlines()]
    assert sorted(r[0] for r in rows if r[1:3] == ["rejected", "sha256_mismatch"]) == NAMES
    assert "3 rejected" in captured.err
    assert set(fleet.versions().values()) == {2}


def test_a_targeted_notify_counts_its_node_and_names_unknown_ids(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--nodes r1,ghost --wait 1`: r1 applies, r2 and r3 ignore it, the unknown id is named,
    :latest does not move."""
    latest = fleet.latest_version()
    saved = write_checkpoint(fleet.incoming, 4)
    code = fks(fleet, "notify", str(saved.path), "--version", "4", "--nodes", "r1,ghost",
               "--wait", "1")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured
    assert "ghost" in captured.err and "targeted: :latest does not move" in captured.err
    assert fleet.versions() == {"r1": 4, "r2": 2, "r3": 2}
    assert fleet.latest_version() == latest
    # the fleet follows with a plain message
    assert fks(fleet, "notify", str(saved.path), "--version", "4", "--wait", "all") == 0
    capsys.readouterr()
    assert set(fleet.versions().values()) == {4}


def test_waiting_with_no_live_node_sends_nothing(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """An instance without live nodes: exit 1, "no live nodes", nothing written to Redis."""
    saved = write_checkpoint(fleet.incoming, 5)
    code = fks(fleet, "notify", str(saved.path), "--wait", "all", "--instance", "empty")
    assert code == 1
    assert "no live nodes" in capsys.readouterr().err
    assert fleet.client.keys("fks:empty:*") == []


def test_more_canaries_than_live_nodes_is_refused_before_sending(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--canary 4` with three live nodes: an error naming them, no version allocated."""
    counter = fleet.client.get(KEYS.version)
    saved = write_checkpoint(fleet.incoming, 5)
    assert fks(fleet, "rollout", str(saved.path), "--canary", "4") == 1
    out = capsys.readouterr().out
    assert "--canary 4 but only 3 live node(s) (r1, r2, r3): nothing sent" in out
    assert fleet.client.get(KEYS.version) == counter
    assert set(fleet.versions().values()) == {4}


def test_a_good_checkpoint_is_promoted_after_the_soak(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canary r1 applies it, requests reach it and succeed through the soak, every node serves
    it and :latest moves."""
    saved = write_checkpoint(fleet.incoming, 5)
    with traffic(fleet, "r1", STATE):
        code = fks(fleet, "rollout", str(saved.path), "--version", "5", "--canary", "1",
                   "--soak", "1")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "canary: r1 (1 of 3 live nodes)" in out and "soak: 1 s" in out
    assert "rollback target: version 4" in out
    assert "promoting version 5 to every node" in out and "promoted: every node answered" in out
    assert set(fleet.versions().values()) == {5}
    assert fleet.latest_version() == 5
    promoted = json.loads(fleet.client.get(KEYS.latest) or "{}")
    assert promoted["model_path"] == str(saved.path) and promoted["sha256"] == saved.sha256
    assert "nodes" not in promoted or promoted["nodes"] is None, promoted


def test_a_checkpoint_the_canary_rejects_never_reaches_another_node(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt file: the canary rejects it with its reason, nothing is promoted (exit 2),
    nobody's model changes, :latest stays."""
    broken = fleet.incoming / "model_6.pt"
    broken.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    code = fks(fleet, "rollout", str(broken), "--version", "6", "--soak", "1")
    out = capsys.readouterr().out
    assert code == 2, out
    assert "rolling back: r1 did not apply it (rejected:" in out
    assert "promoting" not in out
    assert set(fleet.versions().values()) == {5}
    assert fleet.latest_version() == 5


def test_request_errors_on_the_canary_roll_it_back(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint that loads but answers NaN to real traffic: the canary's error rate over
    a one-second soak (shorter than the heartbeat, started right after one: issue 24, b2)
    exceeds the bound, the canary is forced back to version 5 and acks it (exit 2), the other
    nodes never serve it."""
    poisoned = write_poisoned_checkpoint(fleet.incoming, 7)
    beat = json.loads(fleet.client.hget(KEYS.nodes, "r1") or "{}")["heartbeat_at"]
    wait_for(
        lambda: json.loads(fleet.client.hget(KEYS.nodes, "r1") or "{}")["heartbeat_at"] != beat
    )
    with traffic(fleet, "r1", POISON_STATE, STATE):
        code = fks(fleet, "rollout", str(poisoned.path), "--version", "7", "--soak", "1",
                   "--max-error-rate", "0.1")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 2, out
    assert "rolling back: r1 error rate" in out
    assert "forcing r1 back to version 5" in out
    assert "rolled back: every canary acked the rollback applied" in out
    assert set(fleet.versions().values()) == {5}
    assert fleet.latest_version() == 5
    for name in ("r2", "r3"):
        history = httpx.get(fleet.servers[name].url + "/sac/model/history").json()
        assert all(g["version"] != 7 for g in history["generations"])


def test_a_soak_no_request_reached_promotes_nothing_unless_allowed(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """No request reached the canary: no evidence, rolled back (exit 2); with --allow-idle
    the same kind of rollout promotes, saying so; --soak 0 needs --allow-idle."""
    idle = write_checkpoint(fleet.incoming, 8)
    code = fks(fleet, "rollout", str(idle.path), "--version", "8", "--soak", "0.5")
    out = capsys.readouterr().out
    assert code == 2, out
    assert "rolling back: no requests reached r1 during the soak" in out
    assert set(fleet.versions().values()) == {5}
    assert fks(fleet, "rollout", str(idle.path), "--version", "9", "--soak", "0") == 1
    assert "--allow-idle" in capsys.readouterr().err
    allowed = write_checkpoint(fleet.incoming, 9)
    code = fks(fleet, "rollout", str(allowed.path), "--version", "9", "--soak", "0.5",
               "--allow-idle")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "note: no requests reached r1 (--allow-idle)" in out
    assert set(fleet.versions().values()) == {9}
    assert fleet.latest_version() == 9


def test_a_canary_that_dies_mid_rollout_is_silent_and_nothing_is_promoted(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """Canaries r1 and r2; r2 is killed (SIGKILL) early in an 8 s soak: its death is seen
    within seconds (its entry stops coming: issue 24, d2), the rollout does not promote, r1 is
    forced back and acks it, and since r2 cannot confirm the rollback the outcome says so
    (exit 3); r3 never serves the checkpoint."""
    saved = write_checkpoint(fleet.incoming, 10)
    acks = fleet.client.pubsub()
    acks.subscribe(KEYS.acks)
    codes: list[int] = []
    started = time.monotonic()
    run = threading.Thread(
        target=lambda: codes.append(
            fks(
                fleet,
                "rollout",
                str(saved.path),
                "--version",
                "10",
                "--canary",
                "2",
                "--soak",
                "8",
                "--allow-idle",
            )  # fmt: skip
        )
    )
    run.start()
    # The soak starts once both canaries have acked; a node rewrites its registry entry just
    # before it publishes its ack, so waiting on the registry alone could kill r2 in between
    # (then it is "silent" at the ack stage, not during the soak).
    seen: list[tuple[object, object]] = []

    def r2_acked() -> bool:
        message = acks.get_message(timeout=0.05)
        if message is not None and message["type"] == "message":
            ack = json.loads(message["data"])
            seen.append((ack.get("node"), ack.get("version")))
        return ("r2", 10) in seen

    wait_for(r2_acked, timeout=15)
    acks.close()
    victim = fleet.servers["r2"].process
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    fleet.servers["r2"].process = None
    run.join(30)
    out = capsys.readouterr().out
    assert codes == [3], out
    assert time.monotonic() - started < 8, out  # seen dead before the soak would have ended
    assert "rolling back: r2 went silent during the soak" in out
    assert "r2 is not live: the rollback is sent to it but not waited for" in out
    assert "rollback failed: r2 is down" in out
    assert "promoting" not in out
    assert fleet.versions() == {"r1": 9, "r3": 9}
    assert fleet.latest_version() == 9
