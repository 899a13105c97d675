"""Checkpoint formats (SPEC §8): .safetensors and .pt written by suffix, both read back."""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
import safetensors.torch
import torch

from common import CheckpointLoadError, CheckpointRejected
from common.checkpoint import build_policy, file_sha256, load_checkpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor, state_shapes
from tests.helpers import Call
from tests.safetensors_files import SMALL, saved_parts, split

DATA = Path(__file__).parent / "data"
WHEN = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def test_the_suffix_picks_the_format_and_both_read_back_the_same_checkpoint(
    tmp_path: Path,
) -> None:
    """.safetensors and .pt of one actor load to the same config, weights and header."""
    actor = SACActor()
    meta = {"loss": 0.25, "run": "a"}
    loaded = {}
    for suffix in ("pt", "safetensors"):
        saved = save_checkpoint(
            tmp_path / f"model_3.{suffix}", actor, model_name="sac_stat_pair", version=3,
            training_step=1200, metadata=meta, saved_at=WHEN,
        )  # fmt: skip
        assert saved.sha256 == file_sha256(saved.path) and saved.size == saved.path.stat().st_size
        loaded[suffix] = load_checkpoint(saved.path, expected_sha256=saved.sha256)
        assert loaded[suffix].format == suffix and loaded[suffix].architecture == "sac_actor"
        assert loaded[suffix].sha256 == saved.sha256
    pt, st = loaded["pt"], loaded["safetensors"]
    for field in ("config", "model_name", "version", "training_step", "saved_at", "metadata"):
        assert getattr(pt, field) == getattr(st, field), field
    assert st.metadata == {"loss": "0.25", "run": "a"} and st.saved_at == WHEN
    assert st.state_dict.keys() == actor.state_dict().keys()
    assert all(torch.equal(st.state_dict[k], v) for k, v in actor.state_dict().items())
    state = torch.randn(8, 28)
    assert torch.equal(build_policy(st).act(state), actor.act(state))


def test_any_safetensors_reader_sees_the_weights_and_our_metadata(tmp_path: Path) -> None:
    """The file is plain safetensors: its __metadata__ carries every field, as strings."""
    actor = SACActor(SMALL)
    saved = save_checkpoint(
        tmp_path / "model_7.safetensors", actor, model_name="m", version=7, training_step=70,
        metadata={"k": 1}, saved_at=WHEN,
    )  # fmt: skip
    foreign = safetensors.torch.load_file(saved.path)
    assert all(torch.equal(foreign[k], v) for k, v in actor.state_dict().items())
    meta = split(saved.path.read_bytes()).header["__metadata__"]
    assert meta == {
        "format": "fks.checkpoint", "format_version": "1", "architecture": "sac_actor",
        "config": json.dumps(SMALL.to_dict(), sort_keys=True, separators=(",", ":")),
        "model_name": "m", "version": "7", "training_step": "70",
        "saved_at": "2026-05-01T12:00:00.250000Z", "metadata": '{"k":"1"}',
    }  # fmt: skip


def test_one_checkpoint_is_always_the_same_bytes(tmp_path: Path) -> None:
    """Saved again (or converted again), a checkpoint hashes the same: the metadata keys,
    which safetensors writes in hash order, are sorted."""
    actor = SACActor(SMALL)
    hashes = {
        save_checkpoint(
            tmp_path / f"model_{i}.safetensors", actor, version=3, metadata={"a": 1, "b": 2},
            saved_at=WHEN,
        ).sha256
        for i in range(8)
    }  # fmt: skip
    assert len(hashes) == 1
    data = (tmp_path / "model_0.safetensors").read_bytes()
    meta = split(data).header["__metadata__"]
    assert list(meta) == sorted(meta)
    assert (8 + len(data) - len(split(data).data)) % 8 == 0, "the tensors stay aligned"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_real_float_dtype_round_trips_unchanged(tmp_path: Path, dtype: torch.dtype) -> None:
    """Weights keep their dtype and every bit through a .safetensors file."""
    actor = SACActor(SMALL).to(dtype)
    saved = save_checkpoint(tmp_path / "model.safetensors", actor)
    loaded = load_checkpoint(saved.path)
    for name, tensor in actor.state_dict().items():
        assert loaded.state_dict[name].dtype == dtype
        assert torch.equal(loaded.state_dict[name], tensor)


def test_a_first_release_pt_file_still_loads() -> None:
    """tests/data/model_first_release.pt, written by the first release, loads as it did."""
    path = DATA / "model_first_release.pt"
    assert file_sha256(path) == "f9b8826d1d7b679b06b119eb8a19758101ff92278727bb4eb58777d926bd6ac8"
    loaded = load_checkpoint(path)
    assert loaded.format == "pt" and loaded.config == PolicyConfig(hidden=(16, 16))
    assert (loaded.model_name, loaded.version, loaded.training_step) == ("sac_stat_pair", 7, 3500)
    assert loaded.metadata == {"eval_return": "5.98", "alpha": "0.41"}
    assert loaded.saved_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    total = sum(float(t.double().sum()) for t in loaded.state_dict.values())
    assert total == pytest.approx(-1.8815900566514756, abs=1e-9)
    action = build_policy(loaded).act(torch.linspace(-1, 1, 28).reshape(1, 28))
    assert float(action) == pytest.approx(-0.01590520143508911, abs=1e-7)


def test_a_pt_file_is_still_written_as_the_first_release_wrote_it(tmp_path: Path) -> None:
    """.pt keeps today's torch.save dict, readable by plain torch.load(weights_only=True)."""
    saved = save_checkpoint(tmp_path / "model_2.pt", SACActor(SMALL), version=2, saved_at=WHEN)
    raw = torch.load(saved.path, weights_only=True)
    assert raw["format"] == "fks.sac_actor" and raw["format_version"] == 1
    assert raw["version"] == 2 and raw["saved_at"] == "2026-05-01T12:00:00.250000Z"


def test_a_safetensors_load_never_touches_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every unpickling entry point made to explode, a .safetensors still loads."""
    saved = save_checkpoint(tmp_path / "model.safetensors", SACActor(SMALL), version=1)

    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was touched")

    import common.checkpoint.format

    for module, name in [
        (torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
        (common.checkpoint.format, "decode_pt"),
    ]:  # fmt: skip
        monkeypatch.setattr(module, name, explode)
    assert load_checkpoint(saved.path).version == 1


def test_a_pickle_named_safetensors_is_refused_unread(tmp_path: Path) -> None:
    """A torch.save archive renamed .safetensors is foreign_format: its pickle never runs."""
    marker = tmp_path / "PWNED"
    torch.save(
        {"state_dict": Call(pathlib.Path.touch, marker)}, tmp_path / "model_evil.safetensors"
    )
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "model_evil.safetensors")
    assert info.value.reason == "foreign_format" and not marker.exists()


def test_a_safetensors_file_named_pt_is_refused(tmp_path: Path) -> None:
    """Suffix and content disagree: foreign_format, whichever way round."""
    saved = save_checkpoint(tmp_path / "model.safetensors", SACActor(SMALL))
    (tmp_path / "model.pt").write_bytes(saved.path.read_bytes())
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "model.pt")
    assert info.value.reason == "foreign_format" and ".pt" in str(info.value)


@pytest.mark.parametrize("name", ["model.pth", "model.bin", "model"])
def test_another_suffix_is_read_as_its_content_says(tmp_path: Path, name: str) -> None:
    """A name that says neither format (tier 1 may be any file) is read by its content."""
    for suffix in ("pt", "safetensors"):
        saved = save_checkpoint(tmp_path / f"source.{suffix}", SACActor(SMALL), version=4)
        (tmp_path / name).write_bytes(saved.path.read_bytes())
        loaded = load_checkpoint(tmp_path / name)
        assert (loaded.format, loaded.version) == (suffix, 4)


@pytest.mark.parametrize(
    ("name", "reason"), [("junk.safetensors", "bad_header"), ("junk.pt", "corrupt")]
)
def test_junk_is_refused_by_the_reader_its_name_picks(
    tmp_path: Path, name: str, reason: str
) -> None:
    (tmp_path / name).write_bytes(b"this is not a checkpoint\n" * 100)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / name)
    assert info.value.reason == reason


def test_a_bare_safetensors_state_dict_loads_with_its_shape_inferred(tmp_path: Path) -> None:
    """safetensors.torch.save_file(actor.state_dict()) loads, as a bare .pt state_dict does;
    metadata another tool wrote (``{"format": "pt"}``) is not believed."""
    actor = SACActor(PolicyConfig(state_dim=28, action_dim=2, hidden=(16, 8)))
    for metadata in (None, {"format": "pt"}):
        safetensors.torch.save_file(actor.state_dict(), tmp_path / "bare.safetensors", metadata)
        loaded = load_checkpoint(tmp_path / "bare.safetensors")
        assert loaded.config == actor.config and loaded.version == 0 and loaded.metadata == {}


def test_a_bare_file_of_other_tensors_is_refused(tmp_path: Path) -> None:
    safetensors.torch.save_file({"weights": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "other.safetensors")
    assert info.value.reason == "foreign_format"


def test_the_hash_and_the_weights_come_from_one_read(tmp_path: Path) -> None:
    """sha256, size and identity describe the bytes the tensors were decoded from."""
    saved = save_checkpoint(tmp_path / "model.safetensors", SACActor(SMALL))
    loaded = load_checkpoint(saved.path)
    data = saved.path.read_bytes()
    assert loaded.sha256 == hashlib.sha256(data).hexdigest() and loaded.size == len(data)
    assert loaded.identity.size == len(data) and loaded.mtime_ns == loaded.identity.mtime_ns


def test_an_unknown_architecture_or_format_version_is_refused(tmp_path: Path) -> None:
    """architecture names a network this node cannot build; format_version a layout it
    cannot read: each refused with its own reason."""
    for key, value, reason, kind in [
        ("architecture", "lstm_dqn_v1", "unknown_architecture", CheckpointRejected),
        ("format_version", "2", "unsupported_format", CheckpointLoadError),
    ]:
        parts = saved_parts(tmp_path)
        parts.header["__metadata__"][key] = value
        with pytest.raises(kind) as info:
            load_checkpoint(parts.write(tmp_path / "model.safetensors"))
        assert info.value.reason == reason


def test_state_shapes_are_those_of_a_built_actor() -> None:
    """The shapes a checkpoint must hold are read from the config alone, and are the actor's."""
    for config in (PolicyConfig(), SMALL, PolicyConfig(state_dim=5, action_dim=3, hidden=(4, 6))):
        built = {k: tuple(v.shape) for k, v in SACActor(config).state_dict().items()}
        assert state_shapes(config) == built
