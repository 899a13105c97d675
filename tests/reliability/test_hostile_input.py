"""Issue 12: the node-level hostile-input weaknesses, each pinned on real processes.

Every test replays one reproduction of ``shared/repro/hostile-input`` (p1, p3, p4, p5, p6,
p11a, p19, p15b) against a real ``redis-server`` and a real uvicorn server (``fks serve`` for
the log-forging one) and asserts the good outcome: the node keeps serving, refuses the bad
input once with a reason, and still serves what legitimate publishers announce. Waits are
bounded; the bounds asserted are the promise (a legitimate version served within seconds,
memory within a margin of its start), never a speed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import redis
import torch

from common import CheckpointNotification, RedisKeys
from common.checkpoint import CHECKPOINT_FORMAT, SavedCheckpoint, packed_state_dict
from common.checkpoint import save_checkpoint as save_actor_checkpoint
from common.closing import Service
from common.limits import CheckpointLimits
from common.policy import PolicyConfig, SACActor
from fks.redis_server import EmbeddedRedis, free_port
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier, notify_checkpoint
from tests.helpers import bump_mtime, write_checkpoint
from tests.reliability.harness import (
    STATE,
    Clients,
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

INSTANCE = "hostile"
KEYS = RedisKeys(INSTANCE)
SECRET = "hostile-input-secret"
PROJECT = Path(__file__).resolve().parents[2]


# -- fixtures and helpers -------------------------------------------------------------------


def events_of(url: str, path: Path) -> list[dict[str, Any]]:
    """The events naming ``path`` (its real path), newest first."""
    target = real(path)
    return [e for e in events(url) if e["path"] and real(e["path"]) == target]


def rejected(url: str, reason: str) -> float:
    return metric(url, "fks_rejections_total", f'reason="{reason}"')


def reaches(url: str, name: str, value: float, labels: str = "") -> Callable[[], bool]:
    """A predicate: the metric ``name`` of ``url`` equals ``value`` now."""
    return lambda: metric(url, name, labels) == value


def pid_of(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def proc_status(pid: int, field: str) -> int:
    """One field of /proc/<pid>/status (kB for memory fields, a count for Threads)."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


class RssPeak(Service):
    """Samples a process' resident memory every 10 ms on a thread (MB): ``initial``, ``peak``;
    also reads the kernel's high-water mark, reset at entry, so no spike escapes sampling."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid = pid
        self.every = every
        self.initial = self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return proc_status(self.pid, "VmRSS") / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self.samples += 1
            self._stop.wait(self.every)

    def start(self) -> Self:
        with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        self.initial = self.peak = self._rss()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        self.peak = max(self.peak, proc_status(self.pid, "VmHWM") / 1024)

    @property
    def growth(self) -> float:
        return self.peak - self.initial


def write_bad_version(path: Path) -> Path:
    """A checkpoint whose ``version`` field is the string ``"v3"`` (as p1 builds it)."""
    actor = SACActor()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "policy_config": actor.config.to_dict(),
        "state_dict": packed_state_dict(actor.state_dict()),
        "version": "v3",
    }
    torch.save(payload, path)
    return path


def publish(client: redis.Redis, message: object) -> int:
    """PUBLISH on the channel only (no :latest): bytes and str as given, else as JSON."""
    data = message if isinstance(message, bytes | str) else json.dumps(message)
    return int(client.publish(KEYS.channel, data))


# -- p1: a field of the wrong type in a checkpoint --------------------------------------------


def test_a_cold_node_serves_the_good_checkpoint_beside_a_bad_newest_one_read_once(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """A cold node beside a good checkpoint and a newer one holding "version": "v3" answers
    200 to predicts and /sac/ready with the good one, and reads the bad file once."""
    good = write_checkpoint(model_root, 1)
    bad = write_bad_version(model_root / "model_2.pt")
    bump_mtime(bad)
    server = serve(redis_url, model_root)
    url = server.url
    with httpx.Client(base_url=url, timeout=10) as client:
        codes = Counter(
            client.post("/sac/predict", json={"state": STATE}).status_code for _ in range(50)
        )
        ready = client.get("/sac/ready")
    assert codes == {200: 50}, log_tail(server)
    assert ready.status_code == 200 and ready.json()["version"] == 1
    assert served(url) == (1, real(good.path))
    refusals = events_of(url, bad)
    assert [e["reason"] for e in refusals] == ["bad_metadata"]
    assert rejected(url, "bad_metadata") == 1
    record("hostile p1a: cold start, bad newest beside a good one", predicts=50, bad_reads=1)


def test_a_node_without_redis_keeps_answering_while_a_bad_newest_file_sits_on_disk(
    volatile_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """A node serving from Redis whose Redis goes away, with a newest file holding
    "version": "v3" on disk, answers 200 to every request and reads the bad file once."""
    good = write_checkpoint(model_root, 1)
    server = serve(volatile_redis.url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    bad = write_bad_version(model_root / "model_2.pt")
    bump_mtime(bad)
    volatile_redis.kill()
    until(lambda: mode(url) == "mtime", timeout=10)
    codes: Counter[int] = Counter()
    versions: set[int] = set()
    end = time.monotonic() + 3.0  # three fallback polls (FKS_FALLBACK_POLL_SECONDS=1)
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < end:
            r = client.post("/sac/predict", json={"state": STATE})
            codes[r.status_code] += 1
            if r.status_code == 200:
                versions.add(r.json()["version"])
        ready = client.get("/sac/ready")
    requests = sum(codes.values())
    assert set(codes) == {200}, f"{codes}\n{log_tail(server)}"
    assert versions == {1} and served(url) == (1, real(good.path))
    assert ready.status_code == 200
    refusals = events_of(url, bad)
    assert [e["reason"] for e in refusals] == ["bad_metadata"], (
        f"the bad file was read {len(refusals)} times for {requests} requests"
    )
    record("hostile p1b: Redis away, bad newest file", predicts=requests, bad_reads=len(refusals))


# -- p3: a FIFO named by a notification ------------------------------------------------------


def test_a_fifo_named_by_a_forced_notification_blocks_nothing(
    volatile_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """A forced notification naming a FIFO in a model root is refused at once: a later
    version is served, reloads answer without piling up threads, and predicts still answer
    with Redis gone."""
    write_checkpoint(model_root, 1)
    fifo = model_root / "model_fifo.pt"
    os.mkfifo(fifo)
    server = serve(volatile_redis.url, model_root)
    url, pid = server.url, pid_of(server)
    until(lambda: mode(url) == "redis", timeout=10)
    client = volatile_redis.client()
    try:
        assert publish(client, {"model_path": str(fifo), "version": 2, "force": True}) == 1
    finally:
        client.close()
    until(lambda: rejected(url, "not_regular_file") == 1, timeout=5)
    three = write_checkpoint(model_root, 3)
    published = time.monotonic()
    res = notify_checkpoint(
        three.path,
        version=3,
        sha256=three.sha256,
        instance_id=INSTANCE,
        redis_url=volatile_redis.url,
    )
    assert res.sent
    until(lambda: served(url) == (3, real(three.path)), timeout=5)
    to_serve = time.monotonic() - published

    single = httpx.post(url + "/sac/model/reload", timeout=10)
    assert single.status_code == 200 and single.json()["version"] == 3, single.text
    threads_before = proc_status(pid, "Threads")

    def reload() -> int:
        return httpx.post(url + "/sac/model/reload", timeout=15).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = Counter(pool.map(lambda _: reload(), range(20)))
    threads_after = proc_status(pid, "Threads")
    assert codes == {200: 20}, log_tail(server)
    # Each reload holds one threadpool worker at most while it runs, and no load is left
    # stuck on the lane: the workers it took are idle, not pinned.
    assert threads_after <= threads_before + 20, (threads_before, threads_after)

    volatile_redis.kill()
    until(lambda: mode(url) == "mtime", timeout=10)
    r = httpx.post(url + "/sac/predict", json={"state": STATE}, timeout=5)
    assert r.status_code == 200 and r.json()["version"] == 3
    assert not [e for e in events(url) if e["reason"] in ("timeout", "loads_hung")]
    record(
        "hostile p3: FIFO named in a forced notification",
        legit_served_s=to_serve,
        threads_before=threads_before,
        threads_after_20_reloads=threads_after,
    )


# -- p4: a huge sparse file announced with random hashes --------------------------------------


def test_a_huge_sparse_file_announced_with_random_hashes_is_never_read(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """A 1 GiB sparse file (one byte over the limit) announced 20 times with a fresh sha256
    and force is refused from its size (too_large, never sha256_mismatch), the server's
    memory stays within 100 MB of its start, and a v2 published meanwhile is served."""
    write_checkpoint(model_root, 1)
    big = model_root / "notes.bin"
    with open(big, "wb") as fh:
        fh.truncate(CheckpointLimits().max_bytes + 1)
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    client = redis.Redis.from_url(redis_url)
    try:
        with RssPeak(pid_of(server)) as rss:
            for i in range(20):
                message = {"model_path": str(big), "sha256": secrets.token_hex(32), "force": True}
                assert publish(client, message) == 1
                if i == 10:
                    two = write_checkpoint(model_root, 2)
                    published = datetime.now(UTC)
                    res = notify_checkpoint(
                        two.path, version=2, sha256=two.sha256,
                        instance_id=INSTANCE, redis_url=redis_url,
                    )  # fmt: skip
                    assert res.sent
                time.sleep(0.05)
            until(lambda: served(url) == (2, real(two.path)), timeout=5)
            until(lambda: rejected(url, "too_large") >= 1, timeout=5)
    finally:
        client.close()
    assert rejected(url, "sha256_mismatch") == 0, log_tail(server)
    assert rss.growth < 100, f"RSS {rss.initial:.0f} MB -> peak {rss.peak:.0f} MB"
    refusals = Counter(e["reason"] for e in events_of(url, big))
    assert set(refusals) <= {"too_large", "known_bad"}, refusals
    v2_swap = next(e for e in events_of(url, two.path) if e["kind"] == "swap")
    to_serve = (datetime.fromisoformat(v2_swap["at"]) - published).total_seconds()
    assert to_serve < 5, f"v2 served {to_serve:.1f} s after it was published"
    record(
        "hostile p4: 1 GiB sparse file x20, random sha256",
        rss_start_mb=rss.initial,
        rss_peak_mb=rss.peak,
        too_large=refusals["too_large"],
        known_bad=refusals["known_bad"],
        legit_served_s=to_serve,
    )


# -- p5: a late no-op while a slow load runs --------------------------------------------------


def test_a_late_no_op_during_a_slow_load_does_not_drop_the_newer_version(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """While a slow load runs (a 200 MB checkpoint), the trainer's v2 and then an unversioned
    message naming the file already served arrive: v2 is served, the no-op skipped."""
    one = write_checkpoint(model_root, 1)
    server = serve(redis_url, model_root)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    torch.manual_seed(5)
    slow = save_actor_checkpoint(
        model_root / "slow.pt", SACActor(PolicyConfig(hidden=(4096,) * 4))
    )  # not model_*.pt: only the notification names it
    two = write_checkpoint(model_root, 2)
    client = redis.Redis.from_url(redis_url)
    try:
        announced = datetime.now(UTC)
        assert publish(client, {"model_path": str(slow.path)}) == 1
        time.sleep(0.05)
        res = notify_checkpoint(
            two.path, version=2, sha256=two.sha256, instance_id=INSTANCE, redis_url=redis_url
        )
        assert res.sent and res.receivers == 1
        time.sleep(0.02)
        assert publish(client, {"model_path": str(one.path)}) == 1
        last_sent = datetime.now(UTC)
    finally:
        client.close()
    until(lambda: served(url) == (2, real(two.path)), timeout=10)

    slow_swap = next(e for e in events_of(url, slow.path) if e["kind"] == "swap")
    load_s = (datetime.fromisoformat(slow_swap["at"]) - announced).total_seconds()
    assert datetime.fromisoformat(slow_swap["at"]) > last_sent, (
        f"the slow load ({load_s:.3f} s) ended before the messages behind it were sent: "
        "pick a bigger checkpoint"
    )
    assert load_s >= 0.3, f"the slow load took {load_s:.3f} s"
    skipped = [e for e in events_of(url, one.path) if e["kind"] == "stale"]
    assert [e["reason"] for e in skipped] in (["older_file"], ["same_file"]), skipped
    v2_swap = next(e for e in events_of(url, two.path) if e["kind"] == "swap")
    assert v2_swap["version"] == 2
    # One batch: the no-op was judged before v2 was loaded, not after v2 was served.
    assert skipped[0]["at"] <= v2_swap["at"]
    record("hostile p5: late no-op during a slow load", slow_load_s=load_s, v2_served=1)


# -- p6: replayed signed messages --------------------------------------------------------------


def test_replayed_and_stale_forced_messages_are_refused_when_messages_are_signed(
    redis_url: str, serve: Serve, model_root: Path
) -> None:
    """With a secret, a captured signed rollback replayed 10 times after v5 is refused each
    time (replayed), as are a forced message issued too long ago and one without issued_at:
    v5 stays served and the generation does not move."""
    saved = {v: write_checkpoint(model_root, v) for v in (1, 2)}
    server = serve(redis_url, model_root, FKS_NOTIFY_SECRET=SECRET, FKS_FORCE_MAX_AGE_SECONDS="2")
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    # the eavesdropper: no secret, just SUBSCRIBE
    eavesdropper = redis.Redis.from_url(redis_url).pubsub()
    eavesdropper.subscribe(KEYS.channel)
    client = redis.Redis.from_url(redis_url)
    try:
        with CheckpointNotifier(redis_url, INSTANCE, secret=SECRET) as trainer:
            assert trainer.notify(saved[2].path, version=2).sent
            until(lambda: served(url) == (2, real(saved[2].path)), timeout=5)
            assert trainer.notify(saved[1].path, version=1, force=True).sent  # a rollback
            until(lambda: served(url) == (1, real(saved[1].path)), timeout=5)
            captured: list[bytes] = []

            def capture() -> bool:
                message = eavesdropper.get_message(timeout=0.1)
                if message is not None and message["type"] == "message":
                    if json.loads(message["data"]).get("force"):
                        captured.append(message["data"])
                return bool(captured)

            until(capture, timeout=5)
            eavesdropper.close()  # it would count as a receiver of the replays
            for v in (3, 4, 5):
                saved[v] = write_checkpoint(model_root, v)
                assert trainer.notify(saved[v].path, version=v).sent
            until(lambda: served(url) == (5, real(saved[5].path)), timeout=5)
        generation = httpx.get(url + "/sac/model/info", timeout=10).json()["generation"]

        for _ in range(10):
            assert publish(client, captured[0]) == 1
        until(lambda: rejected(url, "replayed") >= 10, timeout=5)
        assert rejected(url, "replayed") == 10

        issued = {
            "issued_at_skew": (datetime.now(UTC) - timedelta(seconds=10), 1),
            "replayed": (None, 11),
        }
        for reason, (when, count) in issued.items():
            forced = CheckpointNotification(
                model_path=str(saved[1].path), version=1, force=True, issued_at=when
            ).signed(SECRET)
            assert publish(client, forced.to_json()) == 1
            until(reaches(url, "fks_rejections_total", count, f'reason="{reason}"'), timeout=5)
    finally:
        client.close()
        eavesdropper.close()
    (undated,) = [e["detail"] for e in events(url) if e["reason"] == "replayed"][:1]
    assert "must carry issued_at" in undated
    (skewed,) = [e["detail"] for e in events(url) if e["reason"] == "issued_at_skew"]
    assert "FKS_FORCE_MAX_AGE_SECONDS" in skewed and "Redis' clock" in skewed, skewed
    info = httpx.get(url + "/sac/model/info", timeout=10).json()
    assert (info["version"], info["generation"]) == (5, generation), log_tail(server)
    assert served(url) == (5, real(saved[5].path))
    record("hostile p6: signed rollback replayed x10, stale and undated forces", replayed=12)


# -- p11a: an oversized :latest and killed subscriptions ---------------------------------------


def test_an_oversized_latest_is_never_read_across_killed_subscriptions(
    volatile_redis: EmbeddedRedis, serve: Serve, model_root: Path
) -> None:
    """With :latest set to a 50 MB string, five CLIENT KILL TYPE pubsub: the node reconnects
    each time, refuses :latest as oversize without reading it, and its memory stays within
    60 MB of its start."""
    one = write_checkpoint(model_root, 1)
    server = serve(volatile_redis.url, model_root, FKS_NOTIFY_SECRET=SECRET)
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    admin = volatile_redis.client()
    try:
        admin.set(KEYS.latest, b"x" * (50 << 20))
        with RssPeak(pid_of(server)) as rss:
            for kill in range(1, 6):
                until(lambda: mode(url) == "redis", timeout=10)
                killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
                assert int(killed) >= 1
                until(reaches(url, "fks_listener_reconnects_total", kill), timeout=10)
            until(lambda: mode(url) == "redis", timeout=10)
    finally:
        admin.close()
    oversize = rejected(url, "oversize")
    assert oversize >= 5, log_tail(server)
    assert rss.growth < 60, f"RSS {rss.initial:.0f} MB -> peak {rss.peak:.0f} MB"
    assert served(url) == (1, real(one.path))
    record(
        "hostile p11a: 50 MB :latest, 5 pubsub kills",
        rss_start_mb=rss.initial,
        rss_peak_mb=rss.peak,
        rss_samples=rss.samples,
        oversize=int(oversize),
        reconnects=5,
    )


# -- p19: poison messages between legitimate ones ----------------------------------------------

SURROGATE = '{"model_path":"/x\\ud800","signature":"' + "0" * 64 + '"}'
NESTED = "[" * 30000 + "]" * 30000


@pytest.mark.parametrize(
    ("poison", "secret", "reason"),
    [(SURROGATE, SECRET, "bad_unicode"), (NESTED, None, "too_deep")],
    ids=["surrogate-signed", "nested-unsigned"],
)
def test_a_stream_of_poison_messages_loses_no_legitimate_notification(
    redis_url: str, serve: Serve, model_root: Path, poison: str, secret: str | None, reason: str
) -> None:
    """20 poison messages a second for 5 s (a lone surrogate with a secret set, 60 KB of
    nested "[" without) never end the subscription: every legitimate notification published
    once a second on the channel alone is served, and every predict answers 200."""
    write_checkpoint(model_root, 1)
    server = serve(redis_url, model_root, **({"FKS_NOTIFY_SECRET": secret} if secret else {}))
    url = server.url
    until(lambda: mode(url) == "redis", timeout=10)
    client = redis.Redis.from_url(redis_url)
    bad_sent = 0
    legit: dict[int, SavedCheckpoint] = {}
    try:
        with Clients(url, n=2, pause=0.01) as clients:
            start = time.monotonic()
            next_bad = next_good = start
            while (now := time.monotonic()) < start + 5.0:
                if now >= next_bad:
                    bad_sent += publish(client, poison)
                    next_bad += 1 / 20
                if now >= next_good:
                    v = len(legit) + 2
                    legit[v] = write_checkpoint(model_root, v)
                    message = CheckpointNotification(
                        model_path=str(legit[v].path), version=v, sha256=legit[v].sha256,
                        issued_at=datetime.now(UTC),
                    )  # fmt: skip
                    wire = (message.signed(secret) if secret else message).to_json()
                    assert publish(client, wire) == 1, f"v{v} published with nobody subscribed"
                    next_good += 1.0
                time.sleep(0.002)
            newest = max(legit)
            until(lambda: served(url) == (newest, real(legit[newest].path)), timeout=5)
    finally:
        client.close()
    assert bad_sent >= 90
    until(lambda: rejected(url, reason) == bad_sent, timeout=5)
    assert metric(url, "fks_listener_reconnects_total") == 0, log_tail(server)
    assert metric(url, "fks_listener_connected") == 1
    swapped = {e["version"] for e in events(url) if e["kind"] == "swap"}
    assert set(legit) <= swapped, f"served {sorted(swapped)} of {sorted(legit)}"
    assert clients.failures() == [] and clients.errors == []
    record(
        f"hostile p19: poison stream ({reason})",
        poison_sent=bad_sent,
        legit_served=len(legit),
        predicts=len(clients.responses),
        reconnects=0,
    )


# -- p15b: a newline in a refused model_path -----------------------------------------------------


def test_a_newline_in_a_refused_path_cannot_forge_a_log_line(
    redis_url: str, model_root: Path, tmp_path: Path
) -> None:
    """`fks serve` logs a refused notification whose model_path holds a newline and a fake
    log line once, on one line, with the newline escaped: no line starts with the forgery."""
    write_checkpoint(model_root, 1)
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(
        os.environ, REDIS_URL=redis_url, FKS_INSTANCE_ID=INSTANCE, STAT_PAIR_RL_DIR=str(model_root)
    )
    forged = (
        "2026-11-23 07:00:00,000 INFO    subscriber.model.holder: serving /models/model_009.pt "
        "version 9 as generation 9 (source channel, 4.1 ms, eager)"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fks", "serve", "--port", str(port)],
            cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        until(lambda: b"subscribed to" in log.read_bytes(), timeout=30)
        assert publish(client, {"model_path": "/elsewhere/x.pt\n" + forged}) == 1
        # a second refusal behind it: once it is logged, the first one is done with
        assert publish(client, {"model_path": "/elsewhere/sentinel.pt"}) == 1
        until(lambda: b"/elsewhere/sentinel.pt" in log.read_bytes(), timeout=10)
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    lines = log.read_text(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith(forged[:23])], "\n".join(lines)
    logged = [line for line in lines if "/elsewhere/x.pt" in line]
    assert len(logged) == 1, "\n".join(lines)
    assert "/elsewhere/x.pt\\n" + forged[:40] in logged[0]
    assert "outside_roots" in logged[0]
    record("hostile p15b: newline in a refused model_path", lines_logged=len(logged))
