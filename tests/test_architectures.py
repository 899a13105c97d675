"""The architecture registry, config validation and the architecture a checkpoint names
(SPEC §12)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from common import CheckpointLoadError, CheckpointRejected
from common.architectures import (
    ConfigError,
    UnknownArchitecture,
    architecture_names,
    get_architecture,
    load_entry_points,
)
from common.architectures.dqn import DQN, DQNConfig
from common.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor, build_architecture, register_architecture
from tests.safetensors_files import retag

SUFFIXES = [".pt", ".safetensors"]


class Tiny(nn.Module):
    """A user's module: one linear layer over 4 inputs."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.Linear(4, width)
        self.state_dim = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(x))


def test_the_built_ins_are_registered_and_build_fresh_modules_with_defaults() -> None:
    """build_architecture("dqn", {...}) gives a new nn.Module each call, other keys defaulted."""
    assert {"sac_actor", "dqn"} <= set(architecture_names())
    one = build_architecture("dqn", {"state_dim": 28, "n_actions": 3})
    two = build_architecture("dqn", {"state_dim": 28, "n_actions": 3})
    assert isinstance(one, DQN) and one is not two
    assert one.config == DQNConfig(state_dim=28, n_actions=3)
    assert one(torch.zeros(2, 28)).shape == (2, 3)
    assert isinstance(build_architecture("sac_actor"), SACActor)
    windowed = build_architecture("dqn", {"window": 4, "n_actions": 2})
    assert windowed(torch.zeros(3, 4, 28)).shape == (3, 2)


@pytest.mark.parametrize(
    "config",
    [{"depth": 2}, {"n_actions": 0}, {"hidden": "8"}, {"state_dim": 10**9}, {"window": 10**6}],
)
def test_build_architecture_refuses_what_a_node_would_refuse(config: dict[str, Any]) -> None:
    """An unknown key, a size over the caps or a value out of range is a ValueError."""
    with pytest.raises(ValueError):
        build_architecture("dqn", config)


def test_an_unregistered_name_is_unknown_and_register_architecture_adds_one() -> None:
    """Only registered names build; register_architecture adds one in-process."""
    with pytest.raises(UnknownArchitecture):
        build_architecture("tiny_test_arch")
    register_architecture("tiny_test_arch", lambda c: Tiny(c["width"]), defaults={"width": 3})
    module = build_architecture("tiny_test_arch", {"width": 5})
    assert isinstance(module, Tiny) and module.layer.out_features == 5
    assert isinstance(build_architecture("tiny_test_arch"), Tiny)
    with pytest.raises(ValueError, match="unknown config key"):
        build_architecture("tiny_test_arch", {"height": 2})


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("window", [1, 3])
def test_a_dqn_checkpoint_names_its_architecture_and_config_in_both_formats(
    tmp_path: Path, suffix: str, window: int
) -> None:
    """save_checkpoint of a DQN, loaded back: architecture, config and weights are the same."""
    config = DQNConfig(n_actions=4, hidden=(16,), window=window, lstm_hidden=8)
    module = DQN(config)
    saved = save_checkpoint(tmp_path / f"model_1{suffix}", module, version=1)
    loaded = load_checkpoint(saved.path)
    assert loaded.architecture == "dqn" and loaded.config == config
    assert all(torch.equal(t, module.state_dict()[k]) for k, t in loaded.state_dict.items())


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_user_architecture_saves_with_architecture_and_config(
    tmp_path: Path, suffix: str
) -> None:
    """save_checkpoint(path, module, architecture=..., config=...) for a registered factory."""
    register_architecture("tiny_saved", lambda c: Tiny(c["width"]), defaults={"width": 3})
    saved = save_checkpoint(tmp_path / f"m{suffix}", Tiny(6), architecture="tiny_saved",
                            config={"width": 6})  # fmt: skip
    loaded = load_checkpoint(saved.path)
    assert loaded.architecture == "tiny_saved" and loaded.config.to_dict() == {"width": 6}
    with pytest.raises(ValueError, match="not those of"):
        save_checkpoint(tmp_path / f"n{suffix}", Tiny(6), architecture="tiny_saved",
                        config={"width": 7})  # fmt: skip


def test_a_first_release_pt_without_architecture_is_a_sac_actor(tmp_path: Path) -> None:
    """A .pt dict without an architecture field reads as sac_actor."""
    actor = SACActor(PolicyConfig(hidden=(8,)))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "policy_config": actor.config.to_dict(),
        "state_dict": actor.state_dict(),
    }
    torch.save(payload, tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.architecture == "sac_actor" and loaded.config == actor.config


def _pt(path: Path, architecture: object, config: object, module: nn.Module) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "architecture": architecture,
                "policy_config": config, "state_dict": module.state_dict()}, path)  # fmt: skip
    return path


def _safetensors(path: Path, architecture: str, config: object) -> Path:
    """A real dqn .safetensors whose __metadata__ architecture and config are replaced."""
    return retag(save_checkpoint(path, DQN(DQNConfig(hidden=(8,)))).path, architecture, config)


HOSTILE = [
    ("lstm_dqn_v1", {}, "unknown_architecture"),
    ("os.system", {}, "unknown_architecture"),
    ("dqn", {"hidden": [8], "evil": "__import__('os')"}, "invalid_config"),
    ("dqn", {"hidden": [65536, 65536, 65536]}, "too_many_parameters"),  # each within the caps
    ("dqn", {"hidden": [8], "state_dim": 10**12}, "invalid_config"),
    ("dqn", {"hidden": [8], "window": 1 << 16, "lstm_hidden": 1 << 16}, "invalid_config"),
    ("dqn", {"hidden": [8] * 300}, "invalid_config"),
    ("dqn", {"hidden": [8] * 65}, "invalid_config"),
    ("dqn", {"hidden": [8], "n_actions": -1}, "bad_config"),
    ("dqn", {"hidden": [8], "n_actions": 2.5}, "bad_config"),
    ("dqn", [8, 8], "bad_config"),
]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize(("architecture", "config", "reason"), HOSTILE, ids=lambda v: repr(v)[:30])
def test_a_hostile_architecture_or_config_is_refused_before_anything_is_built(
    tmp_path: Path, suffix: str, architecture: str, config: object, reason: str
) -> None:
    """Unregistered names, unknown keys, sizes over the caps: refused with a reason, and the
    process does not grow (nothing the config declares is allocated)."""
    path = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        _pt(path, architecture, config, DQN(DQNConfig(hidden=(8,))))
    else:
        _safetensors(path, architecture, config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises((CheckpointRejected, CheckpointLoadError)) as info:
        load_checkpoint(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert info.value.reason == reason, str(info.value)
    assert grown_kib < 200_000


def test_an_integer_too_long_to_print_is_over_the_caps() -> None:
    """A 5,000-digit integer (beyond Python's int-to-str limit) is refused as over the caps."""
    with pytest.raises(ConfigError, match="bit integer"):
        build_architecture("dqn", {"state_dim": 10**5000})


def test_a_dqn_with_the_wrong_tensors_is_shape_mismatch(tmp_path: Path) -> None:
    """Weights that are not those the config declares are refused in both formats."""
    config = DQNConfig(hidden=(8,)).to_dict()
    path = _pt(tmp_path / "model.pt", "dqn", config, DQN(DQNConfig(hidden=(9,))))
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(path)
    assert info.value.reason == "shape_mismatch"


def test_get_architecture_names_a_user_factory_without_defaults_as_any_keys() -> None:
    """A factory registered without defaults takes any keys within the caps; its shapes are
    found on the meta device."""
    register_architecture("tiny_free", lambda c: Tiny(int(c.get("width", 2))))
    spec = get_architecture("tiny_free")
    config = spec.config_of({"width": 7, "note": "x"})
    assert spec.shapes(config) == {"layer.weight": (7, 4), "layer.bias": (7,)}


def _picky(config: dict[str, Any]) -> nn.Module:
    if config["width"] == 13:
        raise KeyError("13 is unlucky")
    return Tiny(config["width"])


def test_a_user_factory_gets_its_defaults_and_its_refusal_is_invalid_config(
    tmp_path: Path,
) -> None:
    """A checkpoint config missing a key of a user's architecture takes its default; any
    exception of the factory on a config (built on the meta device) is invalid_config."""
    register_architecture("picky_test", _picky, defaults={"width": 3})
    _pt(tmp_path / "ok.pt", "picky_test", {}, Tiny(3))
    assert load_checkpoint(tmp_path / "ok.pt").config.to_dict() == {"width": 3}
    _pt(tmp_path / "bad.pt", "picky_test", {"width": 13}, Tiny(3))
    with pytest.raises(CheckpointRejected) as info:
        load_checkpoint(tmp_path / "bad.pt")
    assert info.value.reason == "invalid_config" and "unlucky" in str(info.value)


def test_fks_convert_keeps_a_dqn_a_dqn(tmp_path: Path) -> None:
    """A windowed dqn .pt converted to .safetensors keeps its architecture, config, weights."""
    from common.checkpoint.convert import convert_checkpoint

    config = DQNConfig(hidden=(8,), window=2, lstm_hidden=4)
    source = save_checkpoint(tmp_path / "model_1.pt", DQN(config), version=1)
    converted = convert_checkpoint(source.path)
    loaded = load_checkpoint(converted.saved.path)
    assert (loaded.format, loaded.architecture, loaded.config) == ("safetensors", "dqn", config)


def test_an_entry_point_that_fails_to_import_is_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken plugin never stops a node: its entry point is logged with the reason and the
    others (here one naming an Architecture object) are registered."""
    dist = tmp_path / "plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[fks.architectures]\n"
        "broken_plugin = no_such_module_here:build\n"
        "spec_plugin = fks_test_plugin:SPEC\n"
    )
    (tmp_path / "fks_test_plugin.py").write_text(
        "from common.architectures import Architecture\n"
        "from torch import nn\n"
        "SPEC = Architecture('ignored', lambda c: nn.Linear(4, c['out']), defaults={'out': 2})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level("ERROR", logger="common.architectures"):
        names = load_entry_points()
    assert "spec_plugin" in names and "broken_plugin" not in names
    assert "broken_plugin" in caplog.text and "no_such_module_here" in caplog.text
    module = build_architecture("spec_plugin", {"out": 5})
    assert isinstance(module, nn.Linear) and module.out_features == 5
    with pytest.raises(UnknownArchitecture):
        get_architecture("broken_plugin")
