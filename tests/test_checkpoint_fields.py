"""A checkpoint's own fields (version, metadata, policy_config, ...) are checked, never coerced."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from common import CheckpointLoadError, CheckpointRejected
from common.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, packed_state_dict
from common.policy import PolicyConfig, SACActor

SMALL = PolicyConfig(hidden=(8,))


def write_payload(path: Path, **fields: object) -> Path:
    """torch.save a small checkpoint dict, with ``fields`` replacing (or adding) its entries."""
    actor = SACActor(SMALL)
    payload: dict[str, object] = {
        "format": CHECKPOINT_FORMAT, "format_version": 1, "policy_config": SMALL.to_dict(),
        "state_dict": packed_state_dict(actor.state_dict()), "model_name": "m", "version": 1,
        "training_step": 1, "saved_at": "2024-05-01T12:00:00Z", "metadata": {"k": "v"},
    }  # fmt: skip
    payload.update(fields)
    torch.save(payload, path)
    return path


BAD_METADATA = [
    ("version", "v3"), ("version", math.inf), ("version", math.nan), ("version", -1),
    ("version", True), ("version", 2**64), ("version", 3.0), ("training_step", "7"),
    ("training_step", -math.inf), ("training_step", False), ("training_step", 2**70),
    ("metadata", 5), ("metadata", [("k", "v")]), ("metadata", {"k": [1]}), ("metadata", {1: "x"}),
    ("metadata", {"k": None}), ("model_name", 5), ("model_name", ["m"]), ("saved_at", 5),
    ("saved_at", 1.7e9), ("saved_at", "yesterday"),
]  # fmt: skip


def show(value: object) -> str:
    return repr(value)[:40]


@pytest.mark.parametrize(("field", "value"), BAD_METADATA, ids=show)
def test_a_field_of_the_wrong_type_or_range_is_bad_metadata(
    tmp_path: Path, field: str, value: object
) -> None:
    """Each bad header field is a CheckpointLoadError(bad_metadata) naming the field."""
    path = write_payload(tmp_path / "model.pt", **{field: value})
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(path)
    assert info.value.reason == "bad_metadata"
    assert field in str(info.value)


BAD_CONFIGS = [
    5, [28, 1, [8]], {}, {"state_dim": 28, "action_dim": 1},
    SMALL.to_dict() | {"state_dim": "28"}, SMALL.to_dict() | {"state_dim": 28.0},
    SMALL.to_dict() | {"state_dim": True}, SMALL.to_dict() | {"state_dim": -1},
    SMALL.to_dict() | {"state_dim": math.inf}, SMALL.to_dict() | {"hidden": "8"},
    SMALL.to_dict() | {"hidden": [8.5]}, SMALL.to_dict() | {"hidden": []},
    SMALL.to_dict() | {"hidden": {8: 8}}, SMALL.to_dict() | {"log_std_min": math.nan},
    SMALL.to_dict() | {"log_std_max": math.inf},
    SMALL.to_dict() | {"log_std_min": "-20"}, SMALL.to_dict() | {"log_std_min": 5.0},
]  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [SMALL.to_dict() | {"log_std_min": -(10**400)}, SMALL.to_dict() | {"depth": 3},
     SMALL.to_dict() | {"state_dim": 10**9}, SMALL.to_dict() | {"hidden": [8] * 300}],
    ids=show,
)  # fmt: skip
def test_a_policy_config_over_the_caps_or_with_an_unknown_key_is_invalid_config(
    tmp_path: Path, config: object
) -> None:
    """A size over the caps (before anything is built) or a key the architecture does not know
    is a CheckpointRejected(invalid_config) (SPEC §12)."""
    path = write_payload(tmp_path / "model.pt", policy_config=config)
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(path)
    assert info.value.reason == "invalid_config"


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=show)
def test_a_policy_config_with_bad_values_is_bad_config(tmp_path: Path, config: object) -> None:
    """A policy_config that is not exactly what to_dict writes is a CheckpointLoadError."""
    path = write_payload(tmp_path / "model.pt", policy_config=config)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(path)
    assert info.value.reason == "bad_config"


def test_absent_fields_take_their_defaults_and_scalars_in_metadata_become_strings(
    tmp_path: Path,
) -> None:
    """No name, version, step or time: "", 0, 0, None; metadata numbers and bools are strings."""
    path = write_payload(
        tmp_path / "model.pt", model_name=None, version=None, training_step=None, saved_at=None,
        metadata={"loss": 0.25, "step": 3, "ok": True},
    )  # fmt: skip
    loaded = load_checkpoint(path)
    assert (loaded.model_name, loaded.version, loaded.training_step) == ("", 0, 0)
    assert loaded.saved_at is None
    assert loaded.metadata == {"loss": "0.25", "step": "3", "ok": "True"}


def test_the_largest_version_loads_and_a_time_without_offset_is_utc(tmp_path: Path) -> None:
    """version 2**64 - 1 is valid; a saved_at with no offset is read as UTC."""
    path = write_payload(tmp_path / "model.pt", version=2**64 - 1, saved_at="2024-05-01T12:00:00")
    loaded = load_checkpoint(path)
    assert loaded.version == 2**64 - 1
    assert loaded.saved_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_an_unforeseen_failure_is_a_load_error_naming_its_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: any exception inside a load is a CheckpointLoadError(load_error)."""
    import common.checkpoint.pt

    def explode(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(common.checkpoint.pt, "interpret", explode)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(write_payload(tmp_path / "model.pt"))
    assert info.value.reason == "load_error"
    assert "KeyError" in str(info.value) and isinstance(info.value.__cause__, KeyError)
