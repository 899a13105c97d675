"""The __metadata__ of a .safetensors checkpoint is checked field by field, never coerced."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import CheckpointError
from common.checkpoint import load_checkpoint
from tests.safetensors_files import SMALL, saved_parts

DEEP = "[" * 100_000 + "]" * 100_000

BAD_METADATA = [
    ("version", "v3"), ("version", "-1"), ("version", "+1"), ("version", "01"),
    ("version", "1.0"), ("version", " 1"), ("version", ""), ("version", "\u0661"),
    ("version", str(2**64)), ("version", "1e3"), ("training_step", "7 "),
    ("training_step", "NaN"), ("training_step", "true"),
    ("saved_at", "yesterday"), ("saved_at", "2024-05-01"), ("saved_at", "2024-05-01T12:00:00"),
    ("saved_at", "1.7e9"), ("saved_at", "2024-13-01T12:00:00Z"), ("saved_at", ""),
    ("metadata", "5"), ("metadata", "[]"), ("metadata", '{"k": 1}'), ("metadata", '{"k": null}'),
    ("metadata", '{"k": {"n": "v"}}'), ("metadata", "not json"), ("metadata", '{"k": NaN}'),
    ("metadata", '{"k": "v", "k": "w"}'), ("metadata", DEEP),
]  # fmt: skip


def load_with(tmp_path: Path, **fields: object) -> CheckpointError:
    """Load a checkpoint whose __metadata__ has ``fields`` set (None: removed); its error."""
    parts = saved_parts(tmp_path, version=1, training_step=2, metadata={"k": "v"})
    meta = parts.header["__metadata__"]
    for key, value in fields.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(parts.write(tmp_path / "model.safetensors"))
    return info.value


@pytest.mark.parametrize(("field", "value"), BAD_METADATA, ids=lambda v: repr(v)[:30])
def test_a_field_of_the_wrong_form_is_bad_metadata(tmp_path: Path, field: str, value: str) -> None:
    """Each bad field is a CheckpointLoadError(bad_metadata) naming the field."""
    error = load_with(tmp_path, **{field: value})
    assert error.reason == "bad_metadata" and field in str(error)


BAD_CONFIGS = [
    "5", "{}", "[28, 1, [8]]", "not json", "NaN", DEEP,
    '{"state_dim": "28", "action_dim": 1, "hidden": [8]}',
    '{"state_dim": 28.0, "action_dim": 1, "hidden": [8]}',
    '{"state_dim": 28, "action_dim": 1, "hidden": [0]}',
    '{"state_dim": 28, "action_dim": 1, "hidden": [8], "log_std_max": Infinity}',
    '{"state_dim": 28, "state_dim": 28, "action_dim": 1, "hidden": [8]}',
]  # fmt: skip


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda v: repr(v)[:30])
def test_a_bad_config_is_bad_config(tmp_path: Path, config: str) -> None:
    assert load_with(tmp_path, config=config).reason == "bad_config"


@pytest.mark.parametrize("field", ["format_version", "architecture", "config"])
def test_a_missing_required_field_is_bad_metadata(tmp_path: Path, field: str) -> None:
    error = load_with(tmp_path, **{field: None})
    assert error.reason == "bad_metadata" and field in str(error)


def test_a_field_nobody_writes_is_bad_metadata(tmp_path: Path) -> None:
    error = load_with(tmp_path, extra="x")
    assert error.reason == "bad_metadata" and "extra" in str(error)


def test_a_value_that_is_not_a_string_is_bad_metadata(tmp_path: Path) -> None:
    """safetensors' metadata is str -> str; a number is refused before the library sees it."""
    error = load_with(tmp_path, version=3)
    assert error.reason == "bad_metadata" and "version" in str(error)


def test_our_fields_without_our_format_tag_are_bad_metadata(tmp_path: Path) -> None:
    """Not a bare file either: a file that half claims to be ours is refused."""
    error = load_with(tmp_path, format="something.else")
    assert error.reason == "bad_metadata" and "format tag" in str(error)


def test_optional_fields_default_when_absent(tmp_path: Path) -> None:
    """model_name, version, training_step, saved_at and metadata may be left out."""
    parts = saved_parts(tmp_path)
    meta = parts.header["__metadata__"]
    for key in ("model_name", "version", "training_step", "saved_at", "metadata"):
        meta.pop(key)
    loaded = load_checkpoint(parts.write(tmp_path / "model.safetensors"))
    assert (loaded.model_name, loaded.version, loaded.training_step) == ("", 0, 0)
    assert loaded.saved_at is None and loaded.metadata == {} and loaded.config == SMALL


def test_the_largest_version_and_other_offsets_are_read(tmp_path: Path) -> None:
    """2**64 - 1 is a version; an RFC 3339 offset other than Z is kept as written."""
    parts = saved_parts(tmp_path)
    meta = parts.header["__metadata__"]
    meta["version"], meta["saved_at"] = str(2**64 - 1), "2024-05-01T14:00:00+02:00"
    loaded = load_checkpoint(parts.write(tmp_path / "model.safetensors"))
    assert loaded.version == 2**64 - 1
    assert loaded.saved_at is not None and loaded.saved_at.isoformat().endswith("+02:00")


def test_metadata_values_must_be_strings_even_in_a_bare_file(tmp_path: Path) -> None:
    """safetensors' __metadata__ is str -> str: another tool's numbers are refused here, not
    left to the library."""
    error = load_with(tmp_path, format=1)
    assert error.reason == "bad_metadata" and "format" in str(error)
