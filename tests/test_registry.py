"""The node registry in fks:<instance>:nodes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import redis

from common import RedisKeys
from common.ack import Ack
from subscriber import ServingNode
from subscriber.pipeline.registry import NodeRegistry, is_stale
from tests.helpers import wait_for


def test_a_beat_writes_what_the_node_serves() -> None:
    """One heartbeat writes the node's JSON entry, with its heartbeat time (fakeredis unit)."""
    server = fakeredis.FakeServer()
    registry = NodeRegistry(
        "redis://fake", RedisKeys("default"), lambda: {"version": 7, "mode": "redis"},
        node_id="node-a", interval=2.0, client=fakeredis.FakeRedis(server=server),
    )  # fmt: skip
    assert registry.beat()
    raw = fakeredis.FakeRedis(server=server).hget("fks:default:nodes", "node-a")
    assert raw is not None
    entry = json.loads(raw)
    assert entry["version"] == 7 and entry["mode"] == "redis" and entry["node_id"] == "node-a"
    assert abs(entry["heartbeat_at"] - time.time()) < 5
    assert entry["clock"] == "redis"  # stamped on Redis' clock (TIME, read by the beat)
    assert not is_stale(entry, time.time())


def test_an_entry_that_missed_three_beats_is_stale() -> None:
    """A dead node is recognisable by its heartbeat age."""
    now = time.time()
    assert is_stale({"interval": 2.0, "heartbeat_at": now - 7}, now)
    assert not is_stale({"interval": 2.0, "heartbeat_at": now - 5}, now)
    # a canary writes every 0.25 s, yet is stale only after a second without an entry
    assert not is_stale({"interval": 0.25, "heartbeat_at": now - 0.9}, now)
    assert is_stale({"interval": 0.25, "heartbeat_at": now - 1.1}, now)
    # a heartbeat from the future (Redis' clock stepped back) is not trusted either
    assert not is_stale({"interval": 2.0, "heartbeat_at": now + 5}, now)
    assert is_stale({"interval": 2.0, "heartbeat_at": now + 120}, now)


def test_a_live_node_registers_and_removes_itself_on_stop(
    redis_url: str, redis_client: redis.Redis, start_node: Callable[..., ServingNode]
) -> None:
    """A started node appears in the hash within a beat; a clean stop removes it."""
    node = start_node(redis_url, node_id="n1", heartbeat_seconds=0.2)
    wait_for(lambda: redis_client.hget(RedisKeys("default").nodes, "n1"))
    entry: dict[str, Any] = json.loads(redis_client.hget(RedisKeys("default").nodes, "n1") or "")
    assert entry["mode"] in {"redis", "mtime"} and entry["version"] is None
    node.stop()
    assert redis_client.hget(RedisKeys("default").nodes, "n1") is None


class _CountingRedis(fakeredis.FakeRedis):
    """fakeredis that records each pipeline it executes (the commands, in order)."""

    executed: list[list[str]]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        real = pipe.execute
        log = self.executed

        def execute(raise_on_error: bool = True) -> Any:
            log.append([str(c[0][0]) for c in pipe.command_stack])
            return real(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def test_the_entry_and_the_acks_go_out_in_one_round_trip_and_a_stopped_node_writes_no_entry() -> (
    None
):
    """The acker sends the registry entry, then its acks, in one pipeline (fakeredis unit);
    after the registry stopped, acks still go out but the removed entry is not written back."""
    from common.ack import Ack
    from subscriber.pipeline.acker import Acker
    from subscriber.runtime.metrics import Metrics

    server = fakeredis.FakeServer()
    client = _CountingRedis(server=server)
    client.executed = []
    keys = RedisKeys("default")
    registry = NodeRegistry(
        "redis://fake", keys, lambda: {"version": 3}, node_id="node-a", client=client
    )
    acker = Acker("redis://fake", keys, Metrics(), registry=registry.write).start()
    try:
        acker.ack(Ack(node="node-a", outcome="applied", version=3))
        wait_for(lambda: acker.sent == 1, timeout=5)
        # Redis' clock, read once before the first entry; then one round trip per batch
        assert client.executed == [["TIME"], ["HSET", "PUBLISH", "TIME"]]
        assert registry.beats == 1
        registry.stop()
        assert not registry.beat()  # stopped: the entry stays removed
        client.executed.clear()
        acker.ack(Ack(node="node-a", outcome="applied", version=4))
        wait_for(lambda: acker.sent == 2, timeout=5)
    finally:
        acker.stop()
    assert client.executed == [["PUBLISH", "TIME"]]
    assert fakeredis.FakeRedis(server=server).hget(keys.nodes, "node-a") is None


def test_a_registry_started_again_after_stop_heartbeats_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """stop() removes the entry and writes no more; start() afterwards registers again (a
    BackgroundLoop may be started again: the fresh-eyes review found this one silent)."""
    keys = RedisKeys("default")
    registry = NodeRegistry(
        redis_url, keys, lambda: {"version": 1, "mode": "redis"}, node_id="again", interval=0.2
    )
    registry.start()
    wait_for(lambda: redis_client.hget(keys.nodes, "again"))
    registry.stop()
    assert redis_client.hget(keys.nodes, "again") is None
    registry.start()
    try:
        wait_for(lambda: redis_client.hget(keys.nodes, "again"), timeout=5)
        beats = registry.beats
        wait_for(lambda: registry.beats > beats, timeout=5)
    finally:
        registry.stop()
    assert redis_client.hget(keys.nodes, "again") is None


def test_the_entry_written_is_the_entry_with_its_recent_acks_signed_or_not() -> None:
    """The entry as written (recent acks spliced in as kept, unsigned; encoded whole when
    signed) parses to exactly :meth:`entry`, hostile text in an ack included (fakeredis)."""
    for secret in (None, "s3cret"):
        server = fakeredis.FakeServer()
        client = fakeredis.FakeRedis(server=server)
        registry = NodeRegistry(
            "redis://fake", RedisKeys("default"), lambda: {"version": 7, "mode": "redis"},
            node_id="node-a", client=client, secret=secret,
        )  # fmt: skip
        assert registry.write()  # no acks yet: an empty list
        assert json.loads(client.hget("fks:default:nodes", "node-a") or b"")["acks"] == []
        acks = [
            Ack(node="node-a", outcome="rejected", reason='"}], {\\u2028', version=i,
                model_path='/m/"x"\n.pt', answers="a" * 64)
            for i in range(20)
        ]  # fmt: skip
        assert registry.write(acks=acks)
        written = json.loads(client.hget("fks:default:nodes", "node-a") or b"")
        expected = registry.entry()
        for entry in (written, expected):
            entry.pop("heartbeat_at"), entry.pop("signature", None)
        assert written == expected
        assert [a["version"] for a in written["acks"]] == list(range(20))[-len(written["acks"]) :]
        assert written["acks"][0] == acks[-len(written["acks"])].recent_dict()


def test_an_ack_on_the_wire_is_its_model_dump_with_utc_time() -> None:
    """The hand-built wire form holds every field of the model, in order, as model_dump."""
    ack = Ack(node="n1", outcome="stale", reason="stale_version", version=3, sha256="b" * 64,
              model_path="/m/x.pt", generation=2, ms=1.23456, answers="c" * 64)  # fmt: skip
    dumped = ack.model_dump(mode="json", exclude={"signature"})
    wire = ack.wire_dict()
    assert list(wire) == list(dumped)
    assert {**dumped, "ms": 1.235, "at": wire["at"]} == wire and wire["at"].endswith("Z")
    signed = ack.signed("k")
    assert list(signed.wire_dict())[-1] == "signature" and "signature" not in signed.recent_dict()


def test_the_largest_ack_a_node_can_send_is_one_a_publisher_accepts() -> None:
    """A 4,096-character model_path and a 200-character reason of characters that JSON
    escapes into 6 bytes each, from the longest node id, signed: under MAX_ACK_BYTES, and
    parsed back whole (it was refused at 8 KiB, the node reported silent)."""
    from common.ack import MAX_ACK_BYTES

    for char in ("\x01", '"', "\\", "€", "😀"):
        path = (char * 4096)[:4096]
        ack = Ack(
            node="n" * 128, outcome="rejected", reason="\x02" * 200, version=2**64 - 1,
            sha256="f" * 64, model_path=path, generation=2**40, ms=1e9, answers="a" * 64,
        ).signed("k" * 64)  # fmt: skip
        raw = ack.to_json().encode()
        assert len(raw) <= MAX_ACK_BYTES
        parsed = Ack.parse(raw, secret="k" * 64)
        assert parsed is not None and parsed.model_path == path
