"""Redis key and channel names (SPEC §3) and instance id validation (SPEC §2)."""

from __future__ import annotations

import pytest

from common import RedisKeys, checkpoint_channel, validate_instance_id


def test_channel_name_follows_the_spec() -> None:
    """The channel is fks:<instance>:model_checkpoints, default instance 'default'."""
    assert checkpoint_channel() == "fks:default:model_checkpoints"
    assert checkpoint_channel("prod-eu.1") == "fks:prod-eu.1:model_checkpoints"


def test_every_key_lives_under_the_instance_prefix() -> None:
    """:latest, :version and nodes are built beside the channel."""
    keys = RedisKeys("a_b")
    assert keys.latest == "fks:a_b:model_checkpoints:latest"
    assert keys.version == "fks:a_b:model_checkpoints:version"
    assert keys.nodes == "fks:a_b:nodes"


@pytest.mark.parametrize(
    "bad", ["", "a b", "x" * 65, "fks:evil", "a*", "ünï", "a\nb", None, 7, "a/b"]
)
def test_bad_instance_ids_raise_value_error(bad: object) -> None:
    """Anything outside [A-Za-z0-9_.-]{1,64} is a ValueError, never a malformed channel."""
    with pytest.raises(ValueError, match="instance_id"):
        validate_instance_id(bad)
    with pytest.raises(ValueError):
        checkpoint_channel(bad)  # type: ignore[arg-type]


def test_longest_valid_instance_id_is_accepted() -> None:
    """64 characters is the limit, inclusive."""
    assert RedisKeys("x" * 64).channel.startswith("fks:" + "x" * 64)
