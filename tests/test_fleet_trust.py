"""The fleet layer with FKS_NOTIFY_SECRET, attacked (issue 24: a1, a2, a4, f1, f2).

Two real uvicorn nodes around one real redis-server, both signing with the secret; web-1's
wall clock runs 400 s ahead (libfaketime in its own process, ``fks/faketime.py``). An
attacker is a plain redis-py client without the secret: it forges registry entries, stores
blobs, replays acks. What holds: nothing the fleet layer acts on comes from it, and no two
machines' clocks are compared. The tests share the fleet and run in order.
"""

from __future__ import annotations

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
import torch

from common import CheckpointNotification, RedisKeys
from common.ack import Ack, answer_digest
from common.checkpoint import save_checkpoint
from common.fleet import read_nodes
from common.policy import SACActor
from fks.cli import main
from fks.faketime import skewed_clock
from fks.redis_server import EmbeddedRedis
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from publisher.acks import AckWaiter
from tests.fleet import POISON_STATE, STATE, served_version, start_fleet
from tests.helpers import wait_for, write_checkpoint, write_poisoned_checkpoint

SECRET = "trust-secret-0123456789abcdef"
KEYS = RedisKeys("default")

pytestmark = [pytest.mark.slow, pytest.mark.story]


@dataclass
class Fleet:
    url: str
    models: Path
    incoming: Path
    servers: dict[str, ServerProcess]
    attacker: redis.Redis

    def fks(self, *args: str) -> int:
        return main([*args, "--redis-url", self.url])

    def version(self, name: str) -> int | None:
        return served_version(self.servers[name])

    def sha256(self, name: str) -> str:
        return str(
            httpx.get(self.servers[name].url + "/sac/model/info", timeout=5).json()["sha256"]
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("trust")
    models = root / "models"
    incoming = models / "incoming"
    incoming.mkdir(parents=True)
    write_checkpoint(models, 1)
    with EmbeddedRedis(persistent=False) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FKS_NOTIFY_SECRET", SECRET)  # the operator's fks commands sign too
        servers = start_fleet(server.url, models, ["web-1"], root, **skewed_clock(+400))
        servers |= start_fleet(server.url, models, ["web-2"], root)
        attacker = redis.Redis.from_url(server.url)
        fleet = Fleet(server.url, models, incoming, servers, attacker)
        try:
            with CheckpointNotifier(server.url) as notifier:
                assert notifier.notify(models / "model_1.pt", version=1).sent  # :latest
            wait_for(lambda: set(_live(fleet)) == {"web-1", "web-2"}, timeout=15)
            yield fleet
        finally:
            attacker.close()
            for s in servers.values():
                s.stop()


@pytest.fixture(autouse=True)
def _whole_fleet(request: pytest.FixtureRequest) -> None:
    """Each test starts with both nodes' entries believed: a test whose attacker rewrote an
    entry leaves it forged until that node's next heartbeat (seen under pytest -n 2: the a2
    test's wait for "all" then counted web-2 alone)."""
    if "fleet" in request.fixturenames:
        fleet = request.getfixturevalue("fleet")
        wait_for(lambda: set(_live(fleet)) == {"web-1", "web-2"}, timeout=15)


def _live(fleet: Fleet, secret: str | None = SECRET) -> list[str]:
    rows = read_nodes(fleet.attacker, KEYS, secret=secret)
    return [r.node_id for r in rows if r.live]


def test_a_node_whose_clock_runs_ahead_is_live_and_applies_a_forced_rollback(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """f1/f2: web-1's clock is 400 s ahead. It stamps its heartbeat on Redis' clock, so it is
    live; the operator's forced message is stamped on Redis' clock too, so web-1 does not
    take it for an old one replayed: both nodes apply v2, then the forced v1."""
    assert sorted(_live(fleet)) == ["web-1", "web-2"]
    v2 = write_checkpoint(fleet.incoming, 2)
    assert fleet.fks("notify", str(v2.path), "--version", "2", "--wait", "all") == 0
    capsys.readouterr()
    code = fleet.fks("notify", str(fleet.models / "model_1.pt"), "--version", "1", "--force",
                     "--wait", "all")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines() if line.strip().startswith("web-")] == [
        "applied",
        "applied",
    ], out
    assert (fleet.version("web-1"), fleet.version("web-2")) == (1, 1)


def test_a_forged_registry_entry_is_never_live_nor_a_canary(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """a4: a Redis writer without the secret adds a fresh-looking entry "0-canary" (first by
    id): `fks status` shows it FORGED?, nobody waits for it, the rollout picks web-1."""
    stop = threading.Event()

    def ghost() -> None:
        while not stop.is_set():
            fleet.attacker.hset(KEYS.nodes, "0-canary", json.dumps({
                "node_id": "0-canary", "interval": 2.0, "heartbeat_at": time.time(),
                "version": 1, "path": "/srv/x.pt", "requests": 0, "errors": 0,
            }))  # fmt: skip
            stop.wait(0.2)

    thread = threading.Thread(target=ghost)
    thread.start()
    try:
        wait_for(lambda: fleet.attacker.hexists(KEYS.nodes, "0-canary"))
        assert "0-canary" in _live(fleet, secret=None)  # what a reader without the secret sees
        assert "0-canary" not in _live(fleet)
        assert fleet.fks("status") == 0
        assert "FORGED? (unsigned)" in capsys.readouterr().out
        v3 = write_checkpoint(fleet.incoming, 3)
        code = fleet.fks("rollout", str(v3.path), "--version", "3", "--soak", "0.5",
                         "--allow-idle")  # fmt: skip
    finally:
        stop.set()
        thread.join()
        fleet.attacker.hdel(KEYS.nodes, "0-canary")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "canary: web-1 (1 of 2 live nodes)" in out and "0-canary" not in out
    assert (fleet.version("web-1"), fleet.version("web-2")) == (3, 3)


def test_a_rewritten_canary_entry_cannot_choose_the_rollback(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """a1: while the attacker keeps rewriting web-1's entry to name its own blob (and stores
    the blob), an operator rolls out a checkpoint that fails on the canary. The forged entry
    is not believed; the rollback target is the signed :latest (v3): web-1 is forced back to
    it and never serves the attacker's weights (a node does not even accept redis-blob: here:
    blobs are opt-in)."""
    evil_actor = SACActor()
    with torch.no_grad():
        evil_actor.mean.weight.zero_()
        evil_actor.mean.bias.fill_(4.0)
    evil = save_checkpoint(tmp_path / "evil.safetensors", evil_actor, version=1)
    fleet.attacker.set(KEYS.blob(evil.sha256), evil.path.read_bytes())
    poisoned = write_poisoned_checkpoint(fleet.incoming, 4)
    stop = threading.Event()

    def forge() -> None:
        while not stop.is_set():
            raw = fleet.attacker.hget(KEYS.nodes, "web-1")
            entry = json.loads(raw) if raw else {"node_id": "web-1", "interval": 2.0}
            entry.update(path=f"redis-blob:{evil.sha256}", version=1, sha256=evil.sha256,
                         heartbeat_at=time.time())  # fmt: skip
            fleet.attacker.hset(KEYS.nodes, "web-1", json.dumps(entry))
            stop.wait(0.003)

    def requests() -> None:
        with httpx.Client(base_url=fleet.servers["web-1"].url, timeout=5) as client:
            while not stop.is_set():
                client.post("/sac/predict", json={"state": POISON_STATE})
                client.post("/sac/predict", json={"state": STATE})

    threads = [threading.Thread(target=forge), threading.Thread(target=requests)]
    try:
        threads[1].start()
        code = fleet.fks("rollout", str(poisoned.path), "--version", "4", "--soak", "2",
                         "--max-error-rate", "0.1")  # fmt: skip
        out = capsys.readouterr().out
        assert code == 2, out
        assert "rollback target: version 3" in out
        threads[0].start()  # now the attacker rewrites the entry: the next rollout
        again = write_poisoned_checkpoint(fleet.incoming, 5)
        code = fleet.fks("rollout", str(again.path), "--version", "5", "--soak", "2",
                         "--max-error-rate", "0.1")  # fmt: skip
        out = capsys.readouterr().out
    finally:
        stop.set()
        for t in threads:
            if t.is_alive() or t.ident is not None:
                t.join()
    assert code in (1, 2), out  # refused (no believable canary) or rolled back to v3
    assert f"redis-blob:{evil.sha256}" not in out
    wait_for(lambda: fleet.version("web-1") == 3, timeout=10)
    assert fleet.sha256("web-1") != evil.sha256
    # the node would not have fetched a blob anyway: a signed message naming one is refused
    with CheckpointNotifier(fleet.url) as notifier:
        result = notifier.notify(f"redis-blob:{evil.sha256}", version=6, nodes=["web-2"],
                                 wait_for=1)  # fmt: skip
    assert result.acks is not None
    ack = result.acks.ack_of("web-2")
    assert ack is not None and (ack.outcome, ack.reason) == ("rejected", "outside_roots")


def test_a_replayed_signed_ack_does_not_answer_a_new_message(fleet: Fleet) -> None:
    """a2: each node's signed ack of v3, recorded, is replayed when the same (version,
    sha256, path) is announced again, forced, after the file went bad on the nodes; the
    replays even arrive first. They answer the earlier message's bytes: the waiter counts only
    what the nodes said of the new one (rejected, sha256_mismatch)."""
    v3 = fleet.incoming / "model_3.pt"  # the rollout test's, when this worker ran it first
    if not v3.exists():  # pytest -n: the module's tests are spread over the workers
        write_checkpoint(fleet.incoming, 3)
    original = v3.read_bytes()
    with CheckpointNotifier(fleet.url) as notifier:
        first = notifier.notify(v3, version=3, wait_for="all", timeout=10)
        assert first.acks is not None and first.acks.complete
        recorded = {a.node: a for a in first.acks.acks}
        assert Ack.parse(recorded["web-1"].to_json(), secret=SECRET) is not None  # genuine
        v3.write_bytes(original[:-64] + bytes(64))
        try:
            with AckWaiter(notifier.client(), KEYS, secret=SECRET) as waiter:
                for ack in recorded.values():  # replayed before the message is even sent
                    fleet.attacker.publish(KEYS.acks, ack.to_json())
                again = notifier.notify(v3, version=3, sha256=first.notification.sha256,  # type: ignore[union-attr]
                                        force=True)  # fmt: skip
                assert again.notification is not None
                report = waiter.collect(
                    answers=answer_digest(again.notification.to_json()),
                    wait_for="all",
                    expected=("web-1", "web-2"),
                    timeout=10,
                )
        finally:
            v3.write_bytes(original)
    assert report.complete
    assert {a.node: (a.outcome, a.reason) for a in report.acks} == {
        "web-1": ("rejected", "sha256_mismatch"),
        "web-2": ("rejected", "sha256_mismatch"),
    }


def test_an_old_signed_latest_put_back_rolls_nothing_back(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """x1, x2: the attacker puts a message of the past (signed, genuine) back into :latest,
    re-encoded so its bytes are new, deletes :epoch (a fake data loss) and kills the nodes'
    subscriptions. The nodes know its signature: nothing is announced again, nobody leaves
    v8, and :latest is put back to v8. Meanwhile, a rollout is refused: that :latest is not
    the fleet's decision to roll back to."""
    old = fleet.attacker.get(KEYS.latest) or b""
    v8 = write_checkpoint(fleet.incoming, 8)
    assert fleet.fks("notify", str(v8.path), "--version", "8", "--wait", "all") == 0
    capsys.readouterr()
    fleet.attacker.set(KEYS.latest, json.dumps(json.loads(old), indent=1))  # new bytes
    v10 = write_checkpoint(fleet.incoming, 10)
    assert fleet.fks("rollout", str(v10.path), "--version", "10", "--allow-idle",
                     "--soak", "0.5") == 1  # fmt: skip
    assert "is not the fleet's decision to roll back to" in capsys.readouterr().out
    fleet.attacker.delete(KEYS.epoch)
    fleet.attacker.client_kill_filter(_type="pubsub")
    wait_for(lambda: CheckpointNotification.from_message(
        fleet.attacker.get(KEYS.latest) or b"").version == 8, timeout=15)  # fmt: skip
    assert {name: fleet.version(name) for name in fleet.servers} == {"web-1": 8, "web-2": 8}
    assert int(fleet.attacker.get(KEYS.version) or 0) == 8  # nothing announced again


def test_a_rollback_the_canary_refuses_is_not_reported_done(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """f2: the soak catches a failing canary, but the rollback target's file went bad on the
    canary meanwhile: web-1 rejects the forced rollback, so the rollout says rollback_failed
    (exit 3) naming why, not rolled_back."""
    held = CheckpointNotification.from_message(fleet.attacker.get(KEYS.latest) or b"")
    target = Path(held.model_path)  # the rollback target: what :latest holds
    original = target.read_bytes()
    poisoned = write_poisoned_checkpoint(fleet.incoming, 9)
    stop = threading.Event()

    def requests() -> None:
        with httpx.Client(base_url=fleet.servers["web-1"].url, timeout=5) as client:
            while not stop.is_set():
                client.post("/sac/predict", json={"state": POISON_STATE})

    thread = threading.Thread(target=requests)
    thread.start()
    try:
        target.write_bytes(original[:-64] + bytes(64))  # the announced sha256 no longer holds
        code = fleet.fks("rollout", str(poisoned.path), "--version", "9", "--soak", "1",
                         "--max-error-rate", "0.1")  # fmt: skip
    finally:
        stop.set()
        thread.join()
        target.write_bytes(original)
    out = capsys.readouterr().out
    assert code == 3, out
    assert "rollback failed: web-1 rejected it (sha256_mismatch)" in out
    assert fleet.version("web-1") == 9  # still the canary: said so, not hidden


def test_a_signed_ack_is_not_a_signed_notification(fleet: Fleet) -> None:
    """x13: an unsigned message naming any checkpoint, with a huge version, is refused; the
    node's ack of it is signed and copies its version and path. Published back on the
    channel, those bytes are refused too (an ack is signed with a key of its own): no node
    serves what no secret holder announced."""
    before = {name: fleet.version(name) for name in fleet.servers}
    target = str(fleet.models / "model_1.pt")
    acks = fleet.attacker.pubsub()
    acks.subscribe(KEYS.acks)
    heard: list[tuple[str, bytes]] = []  # (reason, the ack's bytes)

    def reason_heard(reason: str) -> bytes | None:
        while (message := acks.get_message(timeout=0.05)) is not None:
            if message["type"] == "message":
                heard.append((str(json.loads(message["data"])["reason"]), message["data"]))
        return next((raw for why, raw in heard if why == reason), None)

    try:
        forged = json.dumps({"model_path": target, "version": 2**64 - 6})
        fleet.attacker.publish(KEYS.channel, forged)
        wait_for(lambda: reason_heard("unsigned"), timeout=10)
        signed = reason_heard("unsigned")
        assert signed is not None and Ack.parse(signed, secret=SECRET) is not None  # genuine
        fleet.attacker.publish(KEYS.channel, signed)
        wait_for(lambda: reason_heard("bad_signature"), timeout=10)
    finally:
        acks.close()
    assert {name: fleet.version(name) for name in fleet.servers} == before


def test_a_dead_node_whose_clock_ran_ahead_goes_stale_on_time(fleet: Fleet) -> None:
    """f1: web-1 (clock 400 s ahead) is SIGKILLed: its last entry was stamped on Redis' clock,
    so it goes stale within a few seconds, not 400 s later."""
    victim = fleet.servers["web-1"].process
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    fleet.servers["web-1"].process = None
    killed = time.monotonic()
    wait_for(lambda: "web-1" not in _live(fleet), timeout=10)
    assert time.monotonic() - killed < 8  # 3 heartbeats of 0.3 s (or 1 s), plus a beat
    assert _live(fleet) == ["web-2"]
