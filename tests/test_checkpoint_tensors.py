"""Weights are bounded before they are believed: counted, real floats, laid out as saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from common import CheckpointError, CheckpointLoadError, CheckpointRejected
from common.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointLimits,
    build_policy,
    load_checkpoint,
    packed_state_dict,
    parameter_count,
    save_checkpoint,
)
from common.policy import PolicyConfig, SACActor
from tests.process_stats import peak_memory_growth


def save_raw(path: Path, config: PolicyConfig, state_dict: dict[str, Tensor]) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1,
                "policy_config": config.to_dict(), "state_dict": state_dict}, path)  # fmt: skip
    return path


def stride0_bomb(path: Path, hidden: int) -> Path:
    """As p2 builds it: every weight a zero-stride expand of one 4-byte storage."""
    config = PolicyConfig(state_dim=28, action_dim=1, hidden=(hidden, hidden))
    one = torch.zeros(1)
    shapes = {"trunk.0.weight": (hidden, 28), "trunk.0.bias": (hidden,),
              "trunk.2.weight": (hidden, hidden), "trunk.2.bias": (hidden,),
              "mean.weight": (1, hidden), "mean.bias": (1,),
              "log_std.weight": (1, hidden), "log_std.bias": (1,)}  # fmt: skip
    return save_raw(path, config, {k: one.expand(*s) for k, s in shapes.items()})


def test_a_declared_size_over_the_limit_is_refused_before_anything_is_built(
    tmp_path: Path,
) -> None:
    """A stride-0 bomb declaring more than max_parameters fails on its policy_config alone."""
    bomb = stride0_bomb(tmp_path / "model_bomb.pt", 64)
    assert bomb.stat().st_size < 4096
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(bomb, limits=CheckpointLimits(max_parameters=1000))
    assert info.value.reason == "too_many_parameters" and "declares" in str(info.value)


def test_the_real_32768_stride0_bomb_is_refused_without_allocating(tmp_path: Path) -> None:
    """p2's 2.4 KB file declaring 4 GiB of weights: too_many_parameters, memory flat."""
    bomb = stride0_bomb(tmp_path / "model_bomb.pt", 32768)
    with peak_memory_growth() as growth, pytest.raises(CheckpointRejected) as info:
        load_checkpoint(bomb)
    assert info.value.reason == "too_many_parameters"
    assert growth[0] < 100, f"memory peaked {growth[0]:.0f} MB above its level"


def test_a_stride0_bomb_within_the_limits_is_refused_for_its_layout(tmp_path: Path) -> None:
    """Zero strides are never what torch.save writes: bad_layout, whatever the size."""
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(stride0_bomb(tmp_path / "model_bomb.pt", 64))
    assert info.value.reason == "bad_layout"


def test_a_transposed_weight_is_refused_though_its_shape_fits(tmp_path: Path) -> None:
    """A strided (non-contiguous) view of a square weight is bad_layout."""
    actor = SACActor()
    state = dict(actor.state_dict())
    state["trunk.2.weight"] = state["trunk.2.weight"].t()
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(save_raw(tmp_path / "model_t.pt", actor.config, state))
    assert info.value.reason == "bad_layout"


def test_views_that_overlap_in_one_storage_are_refused(tmp_path: Path) -> None:
    """One weight reusing another's bytes is aliased_storage; packed side-by-side views load."""
    actor = SACActor()
    packed = packed_state_dict(actor.state_dict())
    assert load_checkpoint(save_raw(tmp_path / "model_ok.pt", actor.config, packed)).version == 0
    flat = packed["trunk.0.weight"]
    base = torch.empty(0).set_(flat.untyped_storage())  # the whole shared storage, flat
    aliased = dict(packed)
    aliased["trunk.0.bias"] = base[: packed["trunk.0.bias"].numel()]
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(save_raw(tmp_path / "model_alias.pt", actor.config, aliased))
    assert info.value.reason == "aliased_storage"


def test_a_complex_inf_weight_is_refused_for_its_dtype(tmp_path: Path) -> None:
    """p18: complex64 inf in log_std.weight (it would pass the finite check) is bad_dtype."""
    actor = SACActor()
    state = {k: v.clone() for k, v in actor.state_dict().items()}
    state["trunk.2.bias"] = torch.full_like(state["trunk.2.bias"], 1000.0)
    state["log_std.weight"] = torch.full(
        state["log_std.weight"].shape, complex(float("inf"), 0.0), dtype=torch.complex64
    )
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(save_raw(tmp_path / "model_inf.pt", actor.config, state))
    assert info.value.reason == "bad_dtype"


@pytest.mark.parametrize(
    "dtype",
    [torch.complex64, torch.complex128, torch.int64, torch.int8, torch.bool, torch.uint8,
     torch.float8_e4m3fn],
)  # fmt: skip
def test_only_real_floating_dtypes_are_accepted(tmp_path: Path, dtype: torch.dtype) -> None:
    """Any other dtype is refused (float8 already by the pickle scan: it needs another global)."""
    state = SACActor().state_dict()
    state["mean.bias"] = state["mean.bias"].to(dtype)
    torch.save(state, tmp_path / "model_dtype.pt")
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "model_dtype.pt")
    assert info.value.reason in {"bad_dtype", "unsafe_pickle"}


def test_more_weights_held_than_allowed_are_refused_even_if_the_config_fits(
    tmp_path: Path,
) -> None:
    """The tensors' own numels count too: an extra 1000x1000 tensor is too_many_parameters."""
    actor = SACActor()
    state = dict(actor.state_dict()) | {"extra.weight": torch.zeros(1000, 1000)}
    path = save_raw(tmp_path / "model_extra.pt", actor.config, state)
    limits = CheckpointLimits(max_parameters=parameter_count(actor.config) + 10)
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(path, limits=limits)
    assert info.value.reason == "too_many_parameters" and "declares" not in str(info.value)


def test_a_deep_stack_of_tiny_layers_is_refused(tmp_path: Path) -> None:
    """65 hidden layers of width 1 are few parameters but too_many_layers to build and run."""
    actor = SACActor(PolicyConfig(hidden=(1,) * 65))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(save_checkpoint(tmp_path / "model_deep.pt", actor).path)
    assert info.value.reason == "too_many_layers"


def test_a_checkpoint_at_the_parameter_limit_loads_and_builds(tmp_path: Path) -> None:
    """Exactly max_parameters (declared and held) is allowed."""
    actor = SACActor()
    saved = save_checkpoint(tmp_path / "model_1.pt", actor)
    limits = CheckpointLimits(max_parameters=parameter_count(actor.config))
    loaded = load_checkpoint(saved.path, limits=limits)
    state = torch.randn(3, 28)
    assert torch.equal(build_policy(loaded).act(state), actor.act(state))
