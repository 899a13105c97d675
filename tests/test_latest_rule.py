"""The :latest rule: the publisher's Lua script (in a real redis-server) and the nodes'
Python mirror (common/latest.py) agree on every case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from common import CheckpointNotification, RedisKeys
from common.latest import moves_latest
from common.notification import message_digest
from common.redis_io.scripts import PUBLISH
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from publisher.rollout import RESENT
from subscriber.node import ServingNode
from tests.helpers import wait_for, write_checkpoint

KEYS = RedisKeys("rule")
KEYS_DEFAULT = RedisKeys("default")
VERSIONS = st.one_of(st.just(0), st.integers(1, 20), st.integers(2**63, 2**64 - 1))


def note(path: str, version: int, force: bool = False) -> CheckpointNotification:
    return CheckpointNotification(model_path=path, version=version, force=force)


@settings(max_examples=300, deadline=None)
@given(
    held=st.none() | st.tuples(VERSIONS, st.booleans()),
    version=VERSIONS,
    force=st.booleans(),
    counter=VERSIONS,
    allocated=st.booleans(),
)
def test_the_script_and_the_mirror_agree(
    session_redis: EmbeddedRedis,
    held: tuple[int, bool] | None,
    version: int,
    force: bool,
    counter: int,
    allocated: bool,
) -> None:
    """For any held message, new message and counter, the script moves :latest exactly
    when moves_latest says so (an equal version is a duplicate or a conflict: never moved)."""
    client = session_redis.client()
    try:
        client.delete(KEYS.latest, KEYS.version)
        allocated = allocated and version > 0
        if allocated:
            counter = version  # ALLOCATE has just raised the counter to it
        held_note = note("/m/held.pt", *held) if held is not None else None
        if held_note is not None:
            client.set(KEYS.latest, held_note.to_json())
        client.set(KEYS.version, str(counter))
        new = note("/m/held.pt", version, force)  # same checkpoint: equal versions are no conflict
        script = client.register_script(PUBLISH)
        moved = script(
            keys=[KEYS.latest, KEYS.version],
            args=[KEYS.channel, new.to_json(), str(version), "1" if force else "0", "",
                  new.model_path, "1" if allocated else "0"],
        )[1]  # fmt: skip
        known = version - 1 if allocated else counter  # what a node knew before the message
        equal = held_note is not None and version > 0 and version == held_note.version
        expected = False if equal else moves_latest(held_note, new, known)
        assert bool(moved) == expected
    finally:
        client.close()


def publish(client: redis.Redis, message: CheckpointNotification, allocated: bool = False) -> bool:
    """The publisher's script, as the announcer calls it; whether :latest moved."""
    script = client.register_script(PUBLISH)
    moved = script(
        keys=[KEYS.latest, KEYS.version, KEYS.targeted],
        args=[KEYS.channel, message.to_json(), str(message.version),
              "1" if message.force else "0", message.sha256 or "", message.model_path,
              "1" if allocated else "0", "1" if message.nodes is not None else "0"],
    )[1]  # fmt: skip
    return bool(moved)


@pytest.mark.parametrize(
    ("held", "counter", "canary", "allocated", "between", "promoted", "moves"),
    [
        (None, 0, 1, False, None, "/m/new.pt", True),
        (None, 3, 4, True, None, "/m/new.pt", True),
        (0, 2, 3, False, None, "/m/new.pt", True),
        (None, 0, 1, False, None, "/m/other.pt", False),
        (None, 0, 1, False, "/m/unversioned.pt", "/m/new.pt", False),
        (None, 5, 3, False, None, "/m/new.pt", False),
    ],
    ids=[
        "empty",
        "allocated",
        "over an unversioned decision",
        "another checkpoint",
        "a decision in between",
        "a version issued before",
    ],  # fmt: skip
)
def test_a_canarys_promotion_moves_an_empty_or_unversioned_latest(
    session_redis: EmbeddedRedis,
    held: int | None,
    counter: int,
    canary: int,
    allocated: bool,
    between: str | None,
    promoted: str,
    moves: bool,
) -> None:
    """SPEC §11: a rollout sends version v to its canaries only (raising the counter to v),
    then the same message to every node. Where :latest holds no version yet, that promotion
    must still enter it (else a fleet's first rollout is never in :latest), unless it names
    another checkpoint, a decision entered :latest in between, or v was not the newest. The
    nodes' mirror (moves_latest, given the canary while :latest is unchanged) agrees."""
    client = session_redis.client()
    try:
        client.delete(KEYS.latest, KEYS.version, KEYS.targeted)
        held_note = None if held is None else note("/m/held.pt", held)
        if held_note is not None:
            client.set(KEYS.latest, held_note.to_json())
        client.set(KEYS.version, str(canary if allocated else counter))
        to_canaries = note("/m/new.pt", canary).model_copy(update={"nodes": ("n1",)})
        assert not publish(client, to_canaries, allocated)
        latest_then = held_note
        if between is not None:
            assert publish(client, note(between, 0))
            latest_then = note(between, 0)
        promotion = note(promoted, canary)
        known = max(counter, canary)
        targeted = to_canaries if between is None and canary >= counter else None
        assert moves_latest(latest_then, promotion, known, targeted) is moves
        assert publish(client, promotion) is moves
        if moves:
            held_now = CheckpointNotification.from_message(client.get(KEYS.latest) or b"")
            assert (held_now.version, held_now.model_path) == (canary, "/m/new.pt")
    finally:
        client.close()


def test_a_first_rollout_enters_latest_and_the_canarys_mirror_knows_it(
    redis_url: str, model_root: Path, start_node: Callable[..., ServingNode]
) -> None:
    """A real node and the real notifier: version 1 to this node only, then the same message
    to every node (a promotion). :latest holds it, and the node's mirror of :latest (what it
    hands on as what :latest held before the next message) is that same message."""
    write_checkpoint(model_root, 0, name="model_seed.pt")
    node = start_node(redis_url)
    saved = write_checkpoint(model_root, 1)
    notifier = CheckpointNotifier(redis_url=redis_url)
    canary = notifier.notify(saved.path, version=1, nodes=[node.node_id], wait_for="all")
    assert canary.acks is not None and canary.acks.ok and not canary.latest_updated
    sent = canary.notification
    assert sent is not None
    again = {name: getattr(sent, name) for name in RESENT}
    promotion = notifier.notify(**again, wait_for="all")
    assert promotion.latest_updated and promotion.acks is not None and promotion.acks.ok
    raw = redis.Redis.from_url(redis_url).get(KEYS_DEFAULT.latest)
    assert raw is not None and CheckpointNotification.from_message(raw).version == 1
    wait_for(lambda: node.listener._latest_digest == message_digest(raw))
    notifier.close()
