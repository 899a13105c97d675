"""Issue 11: the twelve ways the serving core broke its promises, each pinned on real processes.

Every test replays one reproduction of ``shared/repro/serving-core`` against a real
``redis-server`` (killed, restarted without its data, SIGSTOPped) and, where the defect is
about a running node, a real uvicorn server; an in-process :class:`subscriber.ServingNode`
stands in where the process boundary adds nothing (a node started later, a starved thread).
Each asserts the good outcome. Waits are bounded; the only time bounds asserted are the ones
that are the promise (a publisher that returns within its timeout, a route that answers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import torch

from common import CheckpointNotification, RedisKeys, Settings
from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier, NotifyResult, notify_checkpoint
from subscriber import ServingNode
from tests.conftest import FAST
from tests.helpers import wait_for, write_checkpoint
from tests.reliability.harness import (
    STATE,
    Serve,
    events,
    log_tail,
    metric,
    mode,
    real,
    record,
    served,
    until,
)

INSTANCE = "core"
KEYS = RedisKeys(INSTANCE)
SECRET = "core-regressions-secret"
UNREACHABLE = "redis://127.0.0.1:1/0"
PROJECT = Path(__file__).resolve().parents[2]
REDIS_CLI = Path(sys.executable).parent / "redis-cli"
StartNode = Callable[..., ServingNode]


# -- fixtures and helpers -------------------------------------------------------------------


def served_path(url: str) -> str | None:
    now = served(url)
    return now[1] if now else None


def serving(url: str, path: Path) -> Callable[[], bool]:
    """A predicate: ``url`` serves ``path`` now."""
    return lambda: served_path(url) == real(path)


def node_served(node: ServingNode) -> tuple[int, str] | None:
    model = node.holder.current()
    return (model.version, real(model.path)) if model else None


def holds(predicate: Callable[[], object], seconds: float, what: str, every: float = 0.05) -> None:
    """Assert ``predicate()`` at every poll for ``seconds`` (something that must stay true)."""
    end = time.monotonic() + seconds
    while True:
        assert predicate(), what
        if time.monotonic() >= end:
            return
        time.sleep(every)


def latest(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(KEYS.latest)
    return json.loads(raw) if raw else None


def redis_cli(server: EmbeddedRedis, *args: str) -> str:
    """Run the real ``redis-cli`` (the one beside the venv's python) against ``server``."""
    done = subprocess.run(
        [str(REDIS_CLI), "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def fks_notify(redis_url: str, path: Path, *args: str) -> dict[str, Any]:
    """``python -m fks.cli notify PATH … --instance core``; the JSON it sent."""
    done = subprocess.run(
        [sys.executable, "-m", "fks.cli", "notify", str(path), *args]
        + ["--instance", INSTANCE, "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
    )
    assert done.returncode == 0, done.stderr
    sent: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return sent


def unversioned(root: Path, n: int) -> SavedCheckpoint:
    """``model_<n>.pt`` whose file carries no version (the publisher allocates one)."""
    return write_checkpoint(root, 0, name=f"model_{n}.pt", seed=n)


def save_actor(
    path: Path, seed: int, *, version: int, hidden: tuple[int, ...] = (256, 256), nan: bool = False
) -> SavedCheckpoint:
    torch.manual_seed(seed)
    actor = SACActor(PolicyConfig(hidden=hidden))
    if nan:
        with torch.no_grad():
            actor.mean.weight[0, 0] = float("nan")
    return save_checkpoint(path, actor, version=version)


# -- e1: a forced rollback sticks ------------------------------------------------------------


def test_a_forced_rollback_survives_reconnects_outages_and_later_nodes(
    aof_redis: EmbeddedRedis, serve: Serve, start_node: StartNode, model_root: Path
) -> None:
    """An operator's forced rollback (redis-cli, then fks notify --force) survives a listener
    kill, a Redis outage and its return, and nodes started afterwards serve it too."""
    one = write_checkpoint(model_root, 1)
    server = serve(aof_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    two = write_checkpoint(model_root, 2)
    with CheckpointNotifier(aof_redis.url, INSTANCE) as trainer:
        assert trainer.notify(two.path, version=2).sent
        until(lambda: served(url) == (2, real(two.path)), timeout=10)

        # (a) the docs' raw rollback (docs/how-to/operate.md), exactly as an operator types it
        raw = json.dumps({"model_path": str(one.path), "force": True})
        assert redis_cli(aof_redis, "PUBLISH", KEYS.channel, raw) == "1"
        until(lambda: served_path(url) == real(one.path), timeout=10)
        admin = aof_redis.client()
        try:
            until(lambda: admin.get(KEYS.latest) == raw.encode(), timeout=5)
        finally:
            admin.close()
        assert int(redis_cli(aof_redis, "CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        until(lambda: metric(url, "fks_listener_reconnects_total") >= 1, timeout=10)
        until(lambda: mode(url) == "redis", timeout=10)
        holds(
            lambda: served_path(url) == real(one.path),
            1.0,
            "the raw forced rollback was undone by the listener's reconnect",
        )
        later = start_node(aof_redis.url, instance_id=INSTANCE)
        assert (node_served(later) or (0, ""))[1] == real(one.path)

        # (b) fks notify --force: back to model_1 after the trainer moved on to model_3
        three = write_checkpoint(model_root, 3)
        assert trainer.notify(three.path, version=3).sent
        until(lambda: served(url) == (3, real(three.path)), timeout=10)
    sent = fks_notify(aof_redis.url, one.path, "--force")
    assert sent["force"] is True and sent["version"] == 4
    until(lambda: served(url) == (4, real(one.path)), timeout=10)

    def rollback_holds(seconds: float, undone: str) -> None:
        """The forced rollback (version 4, model_1) stays served for ``seconds``."""
        rolled_back = (4, real(one.path))
        holds(lambda: served(url) == rolled_back, seconds, undone + "\n" + log_tail(server))

    aof_redis.kill()
    until(lambda: mode(url) == "mtime", timeout=10)
    rollback_holds(2.0, "the mtime fallback undid the rollback while Redis was away")
    aof_redis.start()
    until(lambda: mode(url) == "redis", timeout=15)
    rollback_holds(1.0, "the rollback was undone when Redis returned")
    newest = start_node(aof_redis.url, instance_id=INSTANCE)
    assert node_served(newest) == (4, real(one.path))


# -- e2: a checkpoint that failed its sha256 stays refused -----------------------------------


def test_a_checkpoint_refused_for_its_sha256_is_never_served_by_the_fallback(
    aof_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """A file refused for sha256_mismatch is served neither by the fallback while Redis is
    away nor after Redis returns."""
    one = write_checkpoint(model_root, 1)
    server = serve(aof_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    good = write_checkpoint(model_root, 2, seed=2)  # what the trainer wrote and hashed
    tampered = write_checkpoint(model_root, 2, seed=999)  # then replaced on disk
    assert good.sha256 != tampered.sha256
    res = notify_checkpoint(
        good.path, version=2, sha256=good.sha256, instance_id=INSTANCE, redis_url=aof_redis.url
    )
    assert res.sent
    until(lambda: metric(url, "fks_rejections_total", 'reason="sha256_mismatch"') >= 1, timeout=10)

    def not_tampered() -> bool:
        info = httpx.get(url + "/sac/model/info", timeout=10).json()
        return info["sha256"] == one.sha256 and served_path(url) == real(one.path)

    assert not_tampered()
    aof_redis.kill()
    until(lambda: mode(url) == "mtime", timeout=10)
    holds(not_tampered, 2.5, "the fallback served the refused file\n" + log_tail(server))
    aof_redis.start()
    until(lambda: mode(url) == "redis", timeout=15)
    holds(
        not_tampered, 1.5, "the refused file was served after Redis returned\n" + log_tail(server)
    )


# -- e3/e3b: poison messages ---------------------------------------------------------------


def test_poison_messages_are_refused_without_a_reconnect_and_what_follows_them_applies(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """40 KB of nested JSON and a lone surrogate are refused (too_deep, bad_unicode) without
    ending the session, and a forced rollback right behind each in one MULTI is applied."""
    one = write_checkpoint(model_root, 1)
    server = serve(redis_url, model_root, FKS_NOTIFY_SECRET=SECRET)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    two, three = write_checkpoint(model_root, 2), write_checkpoint(model_root, 3)
    nested = '{"model_path":"/x","metadata":' + "[" * 20000 + "]" * 20000 + "}"
    surrogate = '{"model_path":"\\ud800","signature":"' + "0" * 64 + '"}'
    assert 40_000 < len(nested) < 64 * 1024

    def forced(saved: SavedCheckpoint) -> str:
        message = CheckpointNotification(
            model_path=str(saved.path), force=True, issued_at=datetime.now(UTC)
        )
        return message.signed(SECRET).to_json()

    client = redis.Redis.from_url(redis_url)
    with CheckpointNotifier(redis_url, INSTANCE, secret=SECRET) as trainer:
        try:
            for poison, reason, ahead, back in (
                (nested, "too_deep", two, one),
                (surrogate, "bad_unicode", three, two),
            ):
                version = int(ahead.path.stem.split("_")[1])
                assert trainer.notify(ahead.path, version=version).sent
                until(serving(url, ahead.path), timeout=10)
                pipe = client.pipeline(transaction=True)
                pipe.publish(KEYS.channel, poison)
                pipe.publish(KEYS.channel, forced(back))
                assert pipe.execute() == [1, 1]
                until(serving(url, back.path), timeout=5)
                rejected = metric(url, "fks_rejections_total", f'reason="{reason}"')
                assert rejected == 1, log_tail(server)
        finally:
            client.close()
    assert metric(url, "fks_listener_reconnects_total") == 0, log_tail(server)
    assert metric(url, "fks_listener_connected") == 1


# -- e4: versions after Redis lost its data --------------------------------------------------


def test_versions_continue_above_the_served_one_after_redis_loses_its_data(
    volatile_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """Redis restarted without persistence: the node raises :version to what it serves, so
    versions allocated afterwards are above it and the newest checkpoint is served."""
    unversioned(model_root, 0)
    server = serve(volatile_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    for n in (1, 2, 3):
        saved = unversioned(model_root, n)
        res = notify_checkpoint(saved.path, instance_id=INSTANCE, redis_url=volatile_redis.url)
        assert res.sent and res.notification is not None and res.notification.version == n
        until(serving(url, saved.path), timeout=10)
    assert served(url) == (3, real(model_root / "model_3.pt"))

    volatile_redis.restart()
    restarted = time.monotonic()
    admin = volatile_redis.client()
    try:
        until(lambda: admin.get(KEYS.version) == b"3", timeout=15)
        raised_after = time.monotonic() - restarted
    finally:
        admin.close()
    allocated = []
    for n in (4, 5):
        saved = unversioned(model_root, n)
        res = notify_checkpoint(saved.path, instance_id=INSTANCE, redis_url=volatile_redis.url)
        assert res.sent and res.notification is not None, res.reason
        allocated.append(res.notification.version)
    assert allocated == [4, 5]
    until(lambda: served(url) == (5, real(model_root / "model_5.pt")), timeout=10)
    record("core e4: redis restarted without its data", version_raised_after_s=raised_after)


# -- e14: the catch-up of an older :latest does not undo a newer disk decision ---------------


def test_a_newer_file_served_during_an_outage_is_kept_and_announced_when_redis_returns(
    aof_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """The fallback serves an unversioned newer file while Redis is away; when Redis returns
    the older :latest does not regress it, and the node announces it in :latest."""
    unversioned(model_root, 1)
    server = serve(aof_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    two = unversioned(model_root, 2)
    res = notify_checkpoint(two.path, instance_id=INSTANCE, redis_url=aof_redis.url)
    assert res.sent
    until(lambda: served_path(url) == real(two.path), timeout=10)

    aof_redis.kill()
    three = unversioned(model_root, 3)
    res = notify_checkpoint(three.path, instance_id=INSTANCE, redis_url=aof_redis.url)
    assert res.outcome == "not_sent"
    until(lambda: served_path(url) == real(three.path), timeout=10)
    assert mode(url) == "mtime"

    aof_redis.start()
    started = time.monotonic()
    admin = aof_redis.client()
    try:
        until(lambda: (latest(admin) or {}).get("model_path") == str(three.path), timeout=15)
        announced_after = time.monotonic() - started
        held = latest(admin)
    finally:
        admin.close()
    assert held is not None and held["version"] > 1 and held["sha256"] == three.sha256
    until(lambda: mode(url) == "redis", timeout=10)
    holds(
        lambda: served_path(url) == real(three.path),
        1.5,
        "the catch-up of the older :latest regressed the node\n" + log_tail(server),
    )
    record(
        "core e14: disk decision announced after redis returned", announced_after_s=announced_after
    )


# -- e9: one version names one checkpoint ----------------------------------------------------


def test_a_trainer_reusing_a_version_allocated_by_fks_notify_is_refused(
    aof_redis: EmbeddedRedis, serve: Serve, start_node: StartNode, model_root: Path
) -> None:
    """fks notify --force allocates version N; a trainer's own N for another file is refused
    (conflict), and a node started afterwards serves what the running node serves."""
    one = write_checkpoint(model_root, 1)
    server = serve(aof_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    with CheckpointNotifier(aof_redis.url, INSTANCE) as trainer:
        two = write_checkpoint(model_root, 2)
        assert trainer.notify(two.path, version=2).sent
        until(lambda: served(url) == (2, real(two.path)), timeout=10)
        sent = fks_notify(aof_redis.url, one.path, "--force")
        assert sent["version"] == 3
        until(lambda: served(url) == (3, real(one.path)), timeout=10)
        three = write_checkpoint(model_root, 3)
        res = trainer.notify(three.path, version=3)  # the trainer's own numbering
    assert res.outcome == "conflict" and not res.sent, res.reason
    holds(lambda: served(url) == (3, real(one.path)), 0.5, "a refused message was applied")
    later = start_node(aof_redis.url, instance_id=INSTANCE)
    assert node_served(later) == served(url) == (3, real(one.path))


# -- e13: a cold start with a bad newest file, under a herd -----------------------------------


def test_a_cold_start_herd_loads_a_bad_newest_file_once_and_ends_on_the_announced_one(
    redis_url: str, serve: Serve, model_root: Path, tmp_path: Path
) -> None:
    """No model, a NaN newest file beside a good older one, 16 concurrent predicts: the bad
    file is loaded once, and after v5 is announced the node ends on v5."""
    stage = tmp_path / "stage"
    stage.mkdir()
    s3 = save_actor(stage / "model_3.pt", 3, version=3)
    s4 = save_actor(stage / "model_4.pt", 4, version=4, hidden=(3072, 3072), nan=True)
    s5 = save_actor(stage / "model_5.pt", 5, version=5)
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(16)]
    statuses: list[int] = []
    go = threading.Barrier(17)

    def predict(client: httpx.Client) -> None:
        go.wait(10)
        statuses.append(client.post("/sac/predict", json={"state": STATE}).status_code)

    threads = [threading.Thread(target=predict, args=(c,), daemon=True) for c in clients]
    try:
        for client in clients:
            client.get("/sac/health")
        os.link(s3.path, model_root / "model_3.pt")
        os.link(s4.path, model_root / "model_4.pt")  # newest mtime, NaN weights
        for thread in threads:
            thread.start()
        go.wait(10)
        time.sleep(0.3)
        os.link(s5.path, model_root / "model_5.pt")
        with CheckpointNotifier(redis_url, INSTANCE) as notifier:
            assert notifier.notify(model_root / "model_5.pt", version=5, sha256=s5.sha256).sent
        for thread in threads:
            thread.join(30)
    finally:
        for client in clients:
            client.close()
    until(lambda: served(url) == (5, real(model_root / "model_5.pt")), timeout=10)
    holds(
        lambda: served(url) == (5, real(model_root / "model_5.pt")),
        1.0,
        "an older disk candidate replaced v5\n" + log_tail(server),
    )
    bad_loads = [e for e in events(url) if e["reason"] == "non_finite"]
    record(
        "core e13: cold start herd, NaN newest file",
        loads_of_the_bad_file=len(bad_loads),
        predicts_answered_200=sum(s == 200 for s in statuses),
        predicts=len(statuses),
    )
    assert len(bad_loads) == 1, bad_loads
    assert all(e["path"] == real(model_root / "model_4.pt") for e in bad_loads)


# -- e5 + e11: what the fallback finds on disk ----------------------------------------------


def test_a_checkpoint_written_in_place_is_served_once_complete(
    serve: Serve, model_root: Path, tmp_path: Path
) -> None:
    """Redis unreachable: a file written in place (cp, rsync --inplace) that requests saw
    half-written is served once it is complete."""
    write_checkpoint(model_root, 1)
    server = serve(UNREACHABLE, model_root)
    url = server.url
    assert mode(url) == "mtime" and served(url) == (1, real(model_root / "model_1.pt"))
    data = write_checkpoint(tmp_path, 2).path.read_bytes()  # tmp_path is not a model root
    target = model_root / "model_2.pt"
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                client.post("/sac/predict", json={"state": STATE})
                time.sleep(0.01)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        with open(target, "wb") as fh:  # same inode throughout, like `cp src dst`
            fh.write(data[: len(data) // 2])
            fh.flush()
            until(
                lambda: any(e["path"] == real(target) for e in events(url)
                            if e["kind"] == "load_failed"),
                timeout=5,
            )  # fmt: skip
            fh.write(data[len(data) // 2 :])
        took = until(lambda: served(url) == (2, real(target)), timeout=10)
    finally:
        stop.set()
        thread.join(10)
    half = [e for e in events(url) if e["path"] == real(target) and e["kind"] == "load_failed"]
    record(
        "core e5: checkpoint written in place, redis unreachable",
        half_file_refusals=len(half),
        served_after_completion_s=took,
        reasons=",".join(sorted({str(e["reason"]) for e in half})),
    )


def test_a_checkpoint_saved_into_an_empty_tier_2_is_picked_up(
    serve: Serve, model_root: Path, tmp_path: Path
) -> None:
    """Redis unreachable, serving tier 3 while the tier-2 directory is empty: a checkpoint
    saved into tier 2 is picked up."""
    tier2, tier3 = tmp_path / "tier2", tmp_path / "tier3"
    tier2.mkdir()
    tier3.mkdir()
    write_checkpoint(tier3, 1)
    server = serve(UNREACHABLE, model_root, STAT_PAIR_RL_DIR=str(tier2), FKS_DEFAULT_DIR=str(tier3))
    url = server.url
    assert mode(url) == "mtime" and served(url) == (1, real(tier3 / "model_1.pt"))
    holds(lambda: served(url) is not None, 0.3, "tier 3 stopped being served")
    write_checkpoint(tier2, 2)
    took = until(lambda: served(url) == (2, real(tier2 / "model_2.pt")), timeout=10)
    record("core e11: checkpoint saved into an empty tier 2", served_after_save_s=took)


# -- e17: a checkpoint that blocks its reader --------------------------------------------------


def test_a_fifo_named_by_a_forced_message_does_not_wedge_the_node(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """A forced message naming a FIFO in the model root: a later v2 is still served within a
    few seconds, and rollback and reload still answer."""
    one = write_checkpoint(model_root, 1)
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    fifo = model_root / "model_fifo.pt"
    os.mkfifo(fifo)
    client = redis.Redis.from_url(redis_url)
    try:
        message = json.dumps({"model_path": str(fifo), "force": True})
        assert client.publish(KEYS.channel, message) == 1
        time.sleep(0.5)
        two = write_checkpoint(model_root, 2)
        assert notify_checkpoint(two.path, version=2, instance_id=INSTANCE, redis_url=redis_url)
        took = until(lambda: served(url) == (2, real(two.path)), timeout=5)
        with httpx.Client(base_url=url, timeout=5) as http:
            rollback = http.post("/sac/model/rollback")
            assert rollback.status_code == 200, rollback.text
            assert rollback.json()["version"] == 1
            assert real(rollback.json()["path"]) == real(one.path)
            reload = http.post("/sac/model/reload")
            assert reload.status_code == 200, reload.text
            assert real(reload.json()["path"]) == real(two.path)
        refused = [e for e in events(url) if e["path"] == real(fifo)]
        record("core e17: forced message naming a FIFO", v2_served_after_s=took)
        assert refused and all(e["kind"] in ("rejected", "load_failed") for e in refused)
    finally:
        client.close()
        try:  # should the node have opened the FIFO after all, let it go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


# -- e18: a u64 version does not break allocations ----------------------------------------------


def test_an_explicit_version_of_2_to_the_63_does_not_break_later_allocations(
    redis_url: str, model_root: Path
) -> None:
    """After an explicit version 2**63, allocations still succeed and go above it, for every
    publisher, and :version stays a decimal integer."""
    saved = write_checkpoint(model_root, 1)
    with CheckpointNotifier(redis_url, INSTANCE) as first:
        assert first.notify(saved.path, version=2**63).sent
        allocated = [first.notify(saved.path) for _ in range(2)]
    with CheckpointNotifier(redis_url, INSTANCE) as other:
        allocated.append(other.notify(saved.path))
        counter = other.current_version()
    versions = [r.notification.version for r in allocated if r.notification is not None]
    assert [r.outcome for r in allocated] == ["published"] * 3, [r.reason for r in allocated]
    assert versions == [2**63 + 1, 2**63 + 2, 2**63 + 3]
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(KEYS.version) == str(2**63 + 3).encode()
        assert counter == 2**63 + 3
        assert (latest(client) or {}).get("version") == 2**63 + 3
    finally:
        client.close()


# -- e16: a rollback is not a toggle ---------------------------------------------------------


def test_a_second_rollback_is_refused_and_the_first_stands(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """A second POST /sac/model/rollback right after a first is 409, and the model rolled
    back to stays served."""
    one = write_checkpoint(model_root, 1)
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    two = write_checkpoint(model_root, 2)
    assert notify_checkpoint(two.path, version=2, instance_id=INSTANCE, redis_url=redis_url)
    until(lambda: served(url) == (2, real(two.path)), timeout=10)
    with httpx.Client(base_url=url, timeout=10) as http:
        first, second = http.post("/sac/model/rollback"), http.post("/sac/model/rollback")
    assert first.status_code == 200 and first.json()["version"] == 1
    assert second.status_code == 409, second.text
    holds(
        lambda: served(url) == (1, real(one.path)),
        1.0,
        "the model rolled back to did not stay served",
    )


# -- e8: the publisher against a paused Redis ------------------------------------------------


def _drain(sub: redis.client.PubSub, seconds: float) -> list[int]:
    """Versions of the messages ``sub`` receives within ``seconds``."""
    got: list[int] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        message = sub.get_message(timeout=left)
        if message is not None and message["type"] == "message":
            got.append(int(json.loads(message["data"])["version"]))
    return got


def test_a_paused_redis_costs_the_publisher_a_second_and_it_says_what_is_known(
    own_redis: EmbeddedRedis, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOPped Redis: notify returns within ~1 s, not_sent, and nothing is published on
    SIGCONT; a script sent but not confirmed is 'unknown', and does arrive on SIGCONT."""
    saved = write_checkpoint(model_root, 1)
    listener = own_redis.client()
    sub = listener.pubsub()
    sub.subscribe(KEYS.channel)
    assert sub.get_message(timeout=2) is not None  # the subscribe confirmation
    notifier = CheckpointNotifier(own_redis.url, INSTANCE)
    paused = CheckpointNotifier(own_redis.url, INSTANCE)
    timings: dict[str, float] = {}
    try:
        # warm: both scripts are in Redis' cache, so a late EVALSHA would run
        assert notifier.notify(saved.path, version=1).sent
        assert notifier.notify(saved.path).sent
        assert _drain(sub, 0.3) == [1, 2]

        own_redis.pause()
        try:
            calls: list[tuple[str, Callable[[], NotifyResult]]] = [
                ("explicit", lambda: notify_checkpoint(
                    saved.path, version=10, instance_id=INSTANCE, redis_url=own_redis.url)),
                ("allocated", lambda: notify_checkpoint(
                    saved.path, instance_id=INSTANCE, redis_url=own_redis.url)),
                ("long_lived", lambda: notifier.notify(saved.path, version=11)),
            ]  # fmt: skip
            for label, call in calls:
                start = time.monotonic()
                res = call()
                timings[label] = time.monotonic() - start
                assert res.outcome == "not_sent" and not res.sent, (label, res.reason)
                assert timings[label] < 2.5, (label, timings[label])
        finally:
            own_redis.resume()
        assert _drain(sub, 1.0) == [], "a notification reported not_sent was published"

        # sent but unconfirmed: Redis stops between the ping and the script
        real_publish = paused._publish

        def pause_then_publish(**kwargs: Any) -> Any:
            own_redis.pause()
            return real_publish(**kwargs)

        monkeypatch.setattr(paused, "_publish", pause_then_publish)
        try:
            start = time.monotonic()
            res = paused.notify(saved.path, version=20)
            timings["unknown"] = time.monotonic() - start
        finally:
            own_redis.resume()
        assert res.outcome == "unknown" and not res.sent, res.reason
        assert timings["unknown"] < 2.5
        assert _drain(sub, 2.0) == [20], "the unconfirmed publish did not arrive after SIGCONT"
    finally:
        own_redis.resume()
        notifier.close()
        paused.close()
        sub.close()
        listener.close()
    record(
        "core e8: publisher vs SIGSTOPped redis",
        **{f"{label}_s": seconds for label, seconds in timings.items()},
    )


# -- suspected: shared-storage lag, a starved reader ------------------------------------------


def test_a_notified_file_that_appears_late_is_served_once_it_appears(
    redis_url: str, serve: Serve, model_root: Path, tmp_path: Path
) -> None:
    """A notification whose file appears 1.5 s after the message (shared-storage lag) is
    retried, not remembered as missing, and served once the file is there."""
    write_checkpoint(model_root, 1)
    incoming = model_root / "incoming"  # inside the root, never scanned: only the message counts
    incoming.mkdir()
    stage = tmp_path / "stage"
    staged = write_checkpoint(stage, 2)
    target = incoming / "model_2.pt"
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    res = notify_checkpoint(
        target, version=2, sha256=staged.sha256, instance_id=INSTANCE, redis_url=redis_url
    )
    assert res.sent
    time.sleep(1.5)
    assert served(url) == (1, real(model_root / "model_1.pt"))
    os.link(staged.path, target)  # appears at once, complete
    took = until(lambda: served(url) == (2, real(target)), timeout=10)
    missing = [e for e in events(url) if e["reason"] == "missing"]
    record("core: notified file appears 1.5 s late", served_after_it_appeared_s=took)
    assert missing, "the file was never seen missing: the scenario did not happen"


def test_a_reader_thread_starved_of_the_cpu_is_not_declared_dead(
    redis_url: str, start_node: StartNode, model_root: Path
) -> None:
    """Another thread of the node's process holds the GIL for 2 s (longer than the 1.5 s
    liveness limit), three times: the listener reads its PONG when it wakes, no reconnect."""
    write_checkpoint(model_root, 1)
    node = start_node(redis_url, instance_id=INSTANCE)
    until(lambda: node.listener.connected, timeout=10)
    assert node.timing.dead_after < 2.0
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    probe = threading.Thread(target=tick, daemon=True)
    probe.start()
    interval = sys.getswitchinterval()
    stalls = []
    try:
        for offset in (0.0, 0.2, 0.35):
            time.sleep(0.6 + offset)  # another phase of the listener's 0.5 s PING cycle
            sys.setswitchinterval(60.0)  # no forced GIL hand-over while we spin
            try:
                time.sleep(0.02)  # waiters re-arm with the long interval
                before = len(ticks)
                end = time.monotonic() + 2.0
                while time.monotonic() < end:  # pure Python: holds the GIL throughout
                    pass
            finally:
                sys.setswitchinterval(interval)
            time.sleep(0.05)
            stalls.append(
                max(b - a for a, b in zip(ticks[before - 1 :], ticks[before:], strict=False))
            )
        time.sleep(1.0)
    finally:
        stop.set()
        probe.join(5)
    reconnects = node.metrics.registry.get_sample_value("fks_listener_reconnects_total") or 0.0
    record(
        "core: listener thread starved of the GIL 3 x 2 s",
        longest_stall_s=max(stalls),
        reconnects=reconnects,
    )
    assert min(stalls) > node.timing.dead_after, stalls  # the reader really was starved
    assert reconnects == 0 and node.listener.sessions == 1, node.listener.status()
    assert node.listener.connected and node.listener.counters["connection_errors"] == 0


def test_a_node_that_refused_the_latest_for_its_own_reasons_does_not_roll_the_fleet_back(
    session_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Node B refuses v2 (over its load time budget) and keeps its cold-start model: after a
    reconnect it does not announce that model, and node A keeps serving v2."""
    root = tmp_path / "models"
    root.mkdir()
    write_checkpoint(root, 1)
    redis_url = session_redis.url

    def node(name: str, **overrides: Any) -> ServingNode:
        settings = Settings(
            redis_url=redis_url, instance_id="refused", model_dir=root, default_model_dir=root,
            node_id=name, **overrides,
        )  # fmt: skip
        return ServingNode(settings, timing=FAST).start()

    a, b = node("A"), node("B", load_timeout_seconds=0.005)
    try:
        torch.manual_seed(2)
        big = save_checkpoint(
            root / "model_2.pt", SACActor(PolicyConfig(hidden=(2048, 2048))), version=2
        )
        with CheckpointNotifier(redis_url, "refused") as notifier:
            assert notifier.notify(big.path, version=2).sent
        wait_for(lambda: getattr(a.holder.current(), "version", None) == 2, timeout=10)
        wait_for(lambda: any(e.reason == "timeout" for e in b.holder.events.recent()), 10)
        client = session_redis.client()
        client.client_kill_filter(_type="pubsub")
        wait_for(lambda: a.listener.sessions > 1 and b.listener.sessions > 1, timeout=10)
        b.applier.wait_idle(5)
        time.sleep(0.5)
        assert getattr(a.holder.current(), "version", None) == 2
        assert b.applier.counters["announce_announced"] == 0
        raw = client.get(RedisKeys("refused").latest)
        latest = CheckpointNotification.from_message(raw if isinstance(raw, bytes) else b"")
        assert latest.version == 2 and latest.model_path == str(big.path)
        client.close()
    finally:
        a.stop()
        b.stop()
