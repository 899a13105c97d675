"""One clock for the fleet (common/redis_io/clock.py): Redis' TIME as each process estimates it."""

from __future__ import annotations

import time

import pytest
import redis

from common.redis_io.clock import RedisClock, redis_seconds, sample


def test_a_time_reply_reads_in_every_shape_redis_py_gives() -> None:
    """TIME as a command (ints), as a script's reply in a cluster (bytes), or as text; a
    reply that is not one is a Redis error, never a ValueError escaping a publisher."""
    assert redis_seconds((1796620469, 5)) == 1796620469.000005
    assert redis_seconds([b"1796620469", b"500000"]) == 1796620469.5
    assert redis_seconds(["12", "3"]) == 12.000003
    for bad in ([b"x", b"1"], [True, 1], [None, 1], []):
        with pytest.raises(redis.ResponseError):
            redis_seconds(bad)


def test_the_clock_follows_redis_not_this_machine(redis_client: redis.Redis) -> None:
    """Observed on a round trip, the estimate is Redis' time: here Redis and this process
    share a clock, so the offset is the round trip's error, well under a second."""
    clock = RedisClock()
    assert not clock.measured and abs(clock.now() - time.time()) < 0.01
    told = sample(redis_client, "fks:default:model_checkpoints:latest", clock)
    assert clock.measured and abs(clock.offset) < 0.5 and abs(told - time.time()) < 0.5
    clock.observe(redis_time=time.time() + 30, sent=time.time(), received=time.time())
    assert 29 < clock.now() - time.time() < 31  # a machine 30 s behind Redis
