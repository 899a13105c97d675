"""The served network: shapes, bounds, determinism."""

from __future__ import annotations

import pytest
import torch

from common.policy import PolicyConfig, SACActor, parameter_count


def test_default_actor_maps_28_dims_to_one_action_in_bounds() -> None:
    """28-dim states give one action per row, inside [-1, 1]."""
    actor = SACActor()
    out = actor.act(torch.randn(5, 28) * 100)
    assert out.shape == (5, 1)
    assert bool((out.abs() <= 1).all())


def test_deterministic_action_is_repeatable_and_sampling_is_not() -> None:
    """act(deterministic=True) is a function of the state; sampling varies."""
    torch.manual_seed(0)
    actor = SACActor()
    state = torch.randn(1, 28)
    assert torch.equal(actor.act(state), actor.act(state))
    samples = torch.stack([actor.act(state, deterministic=False) for _ in range(20)])
    assert samples.std() > 0


def test_sample_gives_finite_log_probabilities() -> None:
    """The tanh-corrected log-probability is finite even for saturated actions."""
    actor = SACActor(PolicyConfig(state_dim=4, action_dim=2, hidden=(8,)))
    with torch.no_grad():
        actor.mean.bias.fill_(50.0)
    action, log_prob = actor.sample(torch.randn(16, 4))
    assert action.shape == (16, 2) and log_prob.shape == (16,)
    assert bool(torch.isfinite(log_prob).all())


def test_config_round_trips_and_is_inferred_from_weights() -> None:
    """A config survives to_dict/from_dict and can be read back from a state_dict."""
    cfg = PolicyConfig(state_dim=10, action_dim=3, hidden=(32, 16))
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    assert SACActor.infer_config(SACActor(cfg).state_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [{"state_dim": 0}, {"hidden": ()}, {"action_dim": -1}, {"hidden": (True,)},
     {"log_std_max": float("inf")}, {"log_std_min": float("nan")}],
)  # fmt: skip
def test_nonsense_configs_are_refused(kwargs: dict[str, object]) -> None:
    """Zero, negative or boolean sizes and non-finite log-std bounds are a ValueError."""
    with pytest.raises(ValueError):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]


def test_an_uninitialised_actor_equals_the_original_once_loaded() -> None:
    """initialise=False skips the random init; a strict load makes it the same function."""
    cfg = PolicyConfig(state_dim=28, action_dim=2, hidden=(64, 32))
    original = SACActor(cfg)
    blank = SACActor(cfg, initialise=False)
    blank.load_state_dict(original.state_dict(), strict=True)
    state = torch.randn(6, 28)
    assert torch.equal(blank.act(state), original.act(state))
    assert list(blank.state_dict()) == list(original.state_dict())


@pytest.mark.parametrize(
    "config",
    [PolicyConfig(), PolicyConfig(state_dim=4, action_dim=3, hidden=(8,)),
     PolicyConfig(hidden=(64, 32, 16))],
)  # fmt: skip
def test_parameter_count_is_what_the_built_actor_holds(config: PolicyConfig) -> None:
    """parameter_count(config), from the config alone, equals the numel of every weight."""
    actor = SACActor(config, initialise=False)
    assert parameter_count(config) == sum(p.numel() for p in actor.parameters())
