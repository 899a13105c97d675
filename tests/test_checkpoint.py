"""Checkpoint files: atomic writes and safe, verified loads."""

from __future__ import annotations

import os
import pathlib
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from common import CheckpointLoadError, CheckpointRejected
from common.checkpoint import (
    build_policy,
    file_sha256,
    load_checkpoint,
    packed_state_dict,
    save_checkpoint,
)
from common.policy import PolicyConfig, SACActor
from tests.helpers import Call


def test_save_then_load_round_trips_weights_and_metadata(tmp_path: Path) -> None:
    """What is saved is what is loaded, with name, version, step and metadata."""
    actor = SACActor()
    saved = save_checkpoint(
        tmp_path / "model_3.pt", actor, model_name="sac_stat_pair", version=3,
        training_step=1200, metadata={"loss": 0.25, "alpha": "0.1"},
    )  # fmt: skip
    assert saved.sha256 == file_sha256(saved.path)
    loaded = load_checkpoint(saved.path, expected_sha256=saved.sha256)
    assert (loaded.model_name, loaded.version, loaded.training_step) == ("sac_stat_pair", 3, 1200)
    assert loaded.metadata == {"loss": "0.25", "alpha": "0.1"}
    assert loaded.saved_at == saved.saved_at
    assert loaded.config == actor.config
    state = torch.randn(8, 28)
    assert torch.equal(build_policy(loaded).act(state), actor.act(state))


def test_saved_weights_share_one_storage_and_read_back_as_a_plain_state_dict(
    tmp_path: Path,
) -> None:
    """save_checkpoint packs the tensors into one storage record; any reader gets a state_dict."""
    actor = SACActor()
    saved = save_checkpoint(tmp_path / "model_1.pt", actor)
    with zipfile.ZipFile(saved.path) as archive:
        records = [n for n in archive.namelist() if "/data/" in n and not n.endswith("_id")]
    assert len(records) == 1
    raw = torch.load(saved.path, weights_only=True)["state_dict"]
    fresh = SACActor()
    fresh.load_state_dict(raw)
    assert all(torch.equal(raw[k], v) for k, v in actor.state_dict().items())


def test_packing_keeps_mixed_dtypes_apart() -> None:
    """Tensors of different dtypes cannot share a storage: each keeps its own, values intact."""
    state = {"a": torch.arange(4.0).view(2, 2), "b": torch.tensor([1, 2], dtype=torch.int64)}
    packed = packed_state_dict(state)
    assert packed["a"].dtype == torch.float32 and packed["b"].dtype == torch.int64
    assert torch.equal(packed["a"], state["a"]) and torch.equal(packed["b"], state["b"])
    assert packed["a"].untyped_storage().data_ptr() != state["a"].untyped_storage().data_ptr()


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Only the target remains after a save."""
    save_checkpoint(tmp_path / "model_1.pt", SACActor())
    assert [p.name for p in tmp_path.iterdir()] == ["model_1.pt"]


def test_a_bare_state_dict_is_read_with_its_shape_inferred(tmp_path: Path) -> None:
    """torch.save(actor.state_dict()) files load too."""
    actor = SACActor(PolicyConfig(state_dim=28, action_dim=2, hidden=(64, 64)))
    torch.save(actor.state_dict(), tmp_path / "bare.pt")
    loaded = load_checkpoint(tmp_path / "bare.pt")
    assert loaded.config == actor.config and loaded.version == 0


def test_reader_racing_the_writer_never_sees_a_partial_file(tmp_path: Path) -> None:
    """While one thread saves over and over, every load sees a whole checkpoint."""
    target = tmp_path / "model_latest.pt"
    save_checkpoint(target, SACActor(), version=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        version = 1
        while not stop.is_set():
            save_checkpoint(target, SACActor(), version=version)
            version += 1

    thread = threading.Thread(target=writer)
    thread.start()
    versions = []
    try:
        for _ in range(60):
            try:
                versions.append(load_checkpoint(target).version)
            except BaseException as exc:  # noqa: BLE001 - recorded, asserted below
                errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert max(versions) > 0, "the writer never replaced the file during the reads"


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    """A .pt whose unpickling would create a marker file is refused; the marker never appears."""
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": Call(pathlib.Path.touch, marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert info.value.reason == "unsafe_pickle"
    assert "Unsupported global" in str(info.value)
    assert "weights_only` set to `False`" not in str(info.value), "no advice to bypass"
    assert not marker.exists()


def test_os_system_pickle_is_refused(tmp_path: Path) -> None:
    """A pickle calling os.system is refused before anything runs."""
    marker = tmp_path / "RAN"
    torch.save(Call(os.system, f"touch {marker}"), tmp_path / "evil.pt")
    with pytest.raises(CheckpointLoadError):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_truncated_files_are_refused(tmp_path: Path, keep: float) -> None:
    """Any prefix of a checkpoint is refused as truncated or corrupt."""
    saved = save_checkpoint(tmp_path / "model.pt", SACActor())
    data = saved.path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(cut)
    assert info.value.reason in {"truncated", "corrupt"}


def test_flipped_byte_is_caught_by_the_announced_sha256(tmp_path: Path) -> None:
    """A tampered file fails the sha256 check."""
    saved = save_checkpoint(tmp_path / "model.pt", SACActor())
    data = bytearray(saved.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.path.write_bytes(bytes(data))
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(saved.path, expected_sha256=saved.sha256)
    assert info.value.reason == "sha256_mismatch"


def test_non_finite_weights_are_rejected(tmp_path: Path) -> None:
    """NaN or inf anywhere in the weights is rejected."""
    actor = SACActor()
    first = actor.trunk[0]
    assert isinstance(first, torch.nn.Linear)
    with torch.no_grad():
        first.weight[3, 4] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", actor)
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(tmp_path / "nan.pt")
    assert info.value.reason == "non_finite"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_non_finite_weights_are_rejected_in_every_float_dtype(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    """The finite check covers half, bfloat16 (not a numpy type) and double weights alike."""
    state = SACActor().to(dtype).state_dict()
    state["mean.bias"][0] = float("inf")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(tmp_path / "bad.pt")
    assert info.value.reason == "non_finite"


def test_parameters_saved_with_gradients_are_checked_too(tmp_path: Path) -> None:
    """A bare file of nn.Parameter objects (requires_grad) is checked, not a crash."""
    actor = SACActor()
    params = dict(actor.named_parameters())
    with torch.no_grad():
        params["trunk.0.bias"][1] = float("nan")
    torch.save(params, tmp_path / "params.pt")
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(tmp_path / "params.pt")
    assert info.value.reason == "non_finite"


@pytest.mark.parametrize(
    "payload",
    [[1, 2, 3], {"weights": torch.zeros(3)}, torch.zeros(3), {"format": "fks.sac_actor"}],
)
def test_foreign_files_are_refused(tmp_path: Path, payload: object) -> None:
    """Files that are not our checkpoints are refused as foreign."""
    torch.save(payload, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "foreign.pt")
    assert info.value.reason == "foreign_format"


def test_random_bytes_and_missing_files_are_refused(tmp_path: Path) -> None:
    """Junk is corrupt, absence is missing; neither raises anything else."""
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint\n" * 100)
    with pytest.raises(CheckpointLoadError) as junk:
        load_checkpoint(tmp_path / "junk.pt")
    assert junk.value.reason == "corrupt"
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointLoadError) as noise:
        load_checkpoint(tmp_path / "random.pt")
    assert noise.value.reason in {"corrupt", "unsafe_pickle"}
    with pytest.raises(CheckpointLoadError) as missing:
        load_checkpoint(tmp_path / "nope.pt")
    assert missing.value.reason == "missing"


def test_weights_that_do_not_fit_the_declared_shape_are_rejected(tmp_path: Path) -> None:
    """A state_dict that disagrees with its policy_config is rejected as shape_mismatch."""
    actor = SACActor()
    saved = save_checkpoint(tmp_path / "model.pt", actor)
    raw = torch.load(saved.path, weights_only=True)
    raw["policy_config"]["state_dim"] = 10
    torch.save(raw, tmp_path / "lying.pt")
    with pytest.raises(CheckpointRejected) as info:
        build_policy(load_checkpoint(tmp_path / "lying.pt"))
    assert info.value.reason == "shape_mismatch"
