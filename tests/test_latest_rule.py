"""The :latest rule: the publisher's Lua script (in a real redis-server) and the nodes'
Python mirror (common/latest.py) agree on every case."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common import CheckpointNotification, RedisKeys
from common.latest import moves_latest
from common.redis_io.scripts import PUBLISH
from fks.redis_server import EmbeddedRedis

KEYS = RedisKeys("rule")
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
